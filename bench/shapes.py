"""The real architectures the bench builds random-weight stand-ins of, written once.

A GPU check or a memory estimate needs a model of the real size, not its weights (the Hub is often out of
reach): these are the published configs' shapes, passed to the transformers config classes.
"""

# One architecture per line or two, as in a model card's table.
# fmt: off
# HuggingFaceTB/SmolLM2-135M-Instruct
SMOLLM2 = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, vocab_size=49_152, max_position_embeddings=2048,
               tie_word_embeddings=True)

# TinyLlama/TinyLlama-1.1B (the fine-tune chapter's base model)
TINYLLAMA = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4, vocab_size=32_000, max_position_embeddings=2048)

# Salesforce/blip2-opt-2.7b: ViT-g/14, a 12-layer Q-Former, OPT-2.7b (its vocabulary is 50,272 tokens)
BLIP2_OPT = {
    "vision": dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                   image_size=224, patch_size=14),
    "qformer": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                    encoder_hidden_size=1408),
    "text": dict(hidden_size=2560, word_embed_proj_dim=2560, num_hidden_layers=32, num_attention_heads=32,
                 ffn_dim=10240, max_position_embeddings=2048),
    "query_tokens": 32,
}
OPT_VOCABULARY = 50_272
# fmt: on
