// Head view: every token attends to the tokens on the right; one colour per head, weight as opacity.
// Bundled with the lab (no CDN). Reads its data from the JSON block with id "attention-data":
//   {tokens: [str], special: [bool], causal: bool, heads: int, layer: int,
//    weights: base64 of uint8 (heads * T * T), weight = byte / 255}
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("attention-data").textContent);
  const T = data.tokens.length;
  const H = data.heads;
  const bytes = Uint8Array.from(atob(data.weights), (c) => c.charCodeAt(0));
  const weight = (h, q, k) => bytes[(h * T + q) * T + k] / 255;
  const colours = Array.from({ length: H }, (_, h) => `hsl(${Math.round((360 * h) / H)}, 75%, 45%)`);
  const active = new Array(H).fill(true);
  let hideSinks = false;
  let focus = null; // {side: "left" | "right", index}

  const ROW = 18, TOP = 8, WIDTH = 280;
  const canvas = document.getElementById("lines");
  canvas.width = WIDTH;
  canvas.height = TOP * 2 + ROW * T;
  const ctx = canvas.getContext("2d");

  function label(text) {
    return text.replace(/ /g, "\u00b7").replace(/\n/g, "\u21b5").replace(/\t/g, "\u2192") || "\u2205";
  }

  function buildColumn(id, side) {
    const column = document.getElementById(id);
    data.tokens.forEach((token, index) => {
      const cell = document.createElement("div");
      cell.className = "tok" + (data.special[index] ? " special" : "");
      cell.style.height = ROW + "px";
      cell.textContent = label(token);
      cell.title = `${side === "left" ? "query" : "key"} ${index}: ${JSON.stringify(token)}`;
      cell.addEventListener("mouseenter", () => { focus = { side, index }; draw(); });
      cell.addEventListener("mouseleave", () => { focus = null; draw(); });
      column.appendChild(cell);
    });
  }

  function hidden(k) {
    return hideSinks && (k === 0 || data.special[k]);
  }

  function rowWeights(h, q) {
    // Weights of one query over the visible keys; renormalised when sinks are hidden.
    const row = new Float32Array(T);
    let total = 0;
    for (let k = 0; k < T; k++) {
      if (!hidden(k)) { row[k] = weight(h, q, k); total += row[k]; }
    }
    if (hideSinks && total > 0) for (let k = 0; k < T; k++) row[k] /= total;
    return row;
  }

  function draw() {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const x0 = 4, x1 = WIDTH - 4;
    const visibleHeads = active.map((on, h) => (on ? h : -1)).filter((h) => h >= 0);
    for (const h of visibleHeads) {
      ctx.strokeStyle = colours[h];
      for (let q = 0; q < T; q++) {
        if (focus && focus.side === "left" && focus.index !== q) continue;
        const row = rowWeights(h, q);
        for (let k = 0; k < T; k++) {
          if (focus && focus.side === "right" && focus.index !== k) continue;
          const w = row[k];
          if (w < 0.01) continue; // invisible anyway; skipping keeps 128 tokens fast
          ctx.globalAlpha = Math.min(1, w * (focus ? 1 : 0.9));
          ctx.lineWidth = focus ? 2 : 1.5;
          ctx.beginPath();
          ctx.moveTo(x0, TOP + ROW * q + ROW / 2);
          ctx.lineTo(x1, TOP + ROW * k + ROW / 2);
          ctx.stroke();
        }
      }
    }
    ctx.globalAlpha = 1;
  }

  function buildLegend() {
    const legend = document.getElementById("heads");
    colours.forEach((colour, h) => {
      const box = document.createElement("button");
      box.className = "head on";
      box.style.background = colour;
      box.textContent = h;
      box.title = `head ${h}: click to show or hide`;
      box.addEventListener("click", () => {
        active[h] = !active[h];
        box.classList.toggle("on", active[h]);
        draw();
      });
      legend.appendChild(box);
    });
    document.getElementById("all").addEventListener("click", () => setAll(true));
    document.getElementById("none").addEventListener("click", () => setAll(false));
    document.getElementById("sinks").addEventListener("change", (event) => {
      hideSinks = event.target.checked;
      draw();
    });
  }

  function setAll(on) {
    active.fill(on);
    document.querySelectorAll(".head").forEach((box) => box.classList.toggle("on", on));
    draw();
  }

  const started = performance.now();
  buildColumn("left", "left");
  buildColumn("right", "right");
  buildLegend();
  draw();
  document.body.dataset.renderMs = String(Math.round(performance.now() - started));
  document.body.dataset.ready = "1";
})();
