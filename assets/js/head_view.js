// Head view: every token attends to the tokens on the right; one colour per head, weight as opacity.
// Bundled with the lab (no CDN). Reads its data from the JSON block with id "attention-data":
//   {tokens: [str], special: [bool], causal: bool, heads: int, layer: int,
//    weights: base64 of uint8 (heads * T * T), weight = byte / 255,
//    follow: null or {text, ends: [int|null], words: [str], emb_model, lens_model} (lab.links)}
// Keyboard: Tab reaches the tokens and the head buttons; arrow keys move between tokens (up/down, and
// left/right between the two columns) or heads; Enter or Space keeps a token's lines and shows its links.
// Colours: a hue per head, or Paul Tol's colour-blind-safe "muted" palette when the page asks for it.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("attention-data").textContent);
  const T = data.tokens.length;
  const H = data.heads;
  const bytes = Uint8Array.from(atob(data.weights), (c) => c.charCodeAt(0));
  const weight = (h, q, k) => bytes[(h * T + q) * T + k] / 255;
  const TOL_MUTED = ["#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255", "#AA4499", "#DDDDDD"];
  let colours = [];
  const active = new Array(H).fill(true);
  let hideSinks = false;
  let focus = null; // {side: "left" | "right", index}: the token whose lines alone are drawn
  let pinned = null; // the same, kept after the pointer or the keyboard focus leaves

  const ROW = 18, TOP = 8, WIDTH = 280;
  const canvas = document.getElementById("lines");
  canvas.width = WIDTH;
  canvas.height = TOP * 2 + ROW * T;
  const ctx = canvas.getContext("2d");

  function parentPalette() {
    try {
      return window.parent.labPalette ? window.parent.labPalette() : window.localStorage.getItem("lab-palette") === "cb";
    } catch (error) {
      return false;
    }
  }

  function paletteColours(cb) {
    return Array.from({ length: H }, (_, h) =>
      cb ? TOL_MUTED[h % TOL_MUTED.length] : `hsl(${Math.round((360 * h) / H)}, 75%, 45%)`);
  }

  function label(text) {
    return text.replace(/ /g, "\u00b7").replace(/\n/g, "\u21b5").replace(/\t/g, "\u2192") || "\u2205";
  }

  function shown() {
    return pinned || focus;
  }

  function cells(side) {
    return document.getElementById(side).children;
  }

  function select(side, index, pin) {
    focus = { side, index };
    if (pin) pinned = pinned && pinned.side === side && pinned.index === index ? null : { side, index };
    for (const name of ["left", "right"]) {
      Array.from(cells(name)).forEach((cell, i) => {
        const on = pinned && pinned.side === name && pinned.index === i;
        cell.classList.toggle("pinned", Boolean(on));
        cell.setAttribute("aria-selected", on ? "true" : "false");
      });
    }
    showFollow();
    draw();
  }

  function moveTo(side, index) {
    const target = cells(side)[Math.max(0, Math.min(T - 1, index))];
    Array.from(document.querySelectorAll(".tok")).forEach((cell) => { cell.tabIndex = -1; });
    target.tabIndex = 0;
    target.focus();
  }

  function buildColumn(id, side) {
    const column = document.getElementById(id);
    data.tokens.forEach((token, index) => {
      const cell = document.createElement("div");
      cell.className = "tok" + (data.special[index] ? " special" : "");
      cell.style.height = ROW + "px";
      cell.textContent = label(token);
      cell.setAttribute("role", "option");
      cell.setAttribute("aria-selected", "false");
      cell.tabIndex = index === 0 && side === "left" ? 0 : -1;
      const role = side === "left" ? "query" : "key";
      cell.title = `${role} ${index}: ${JSON.stringify(token)}`;
      cell.setAttribute("aria-label", `${role} token ${index}: ${token}`);
      cell.addEventListener("mouseenter", () => { focus = { side, index }; draw(); });
      cell.addEventListener("mouseleave", () => { focus = null; draw(); });
      cell.addEventListener("focus", () => { focus = { side, index }; showFollow(); draw(); });
      cell.addEventListener("blur", () => { focus = null; draw(); });
      cell.addEventListener("click", () => select(side, index, true));
      cell.addEventListener("keydown", (event) => {
        const moves = { ArrowUp: [side, index - 1], ArrowDown: [side, index + 1], Home: [side, 0], End: [side, T - 1],
          ArrowLeft: ["left", index], ArrowRight: ["right", index] };
        if (event.key in moves) {
          event.preventDefault();
          moveTo(...moves[event.key]);
        } else if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          select(side, index, true);
        }
      });
      column.appendChild(cell);
    });
  }

  // -- links from a token: its embedding neighbours and its logit-lens column (the page follows them) --
  function followLink(text, params) {
    const anchor = document.createElement("a");
    anchor.href = "?" + new URLSearchParams(params).toString();
    anchor.target = "_top";
    anchor.textContent = text;
    anchor.addEventListener("click", (event) => {
      try {
        if (window.parent.labLinks) {
          event.preventDefault();
          window.parent.labLinks.open(anchor.getAttribute("href"));
        }
      } catch (error) {
        // a page without the lab's links: the plain link reloads the page at that address
      }
    });
    return anchor;
  }

  function showFollow() {
    const bar = document.getElementById("follow");
    const follow = data.follow;
    const token = shown();
    bar.textContent = "";
    if (!follow || !token || data.special[token.index]) return;
    const word = follow.words[token.index];
    if (word) {
      bar.appendChild(followLink(`Embedding neighbours of \u2018${word}\u2019 \u2197`,
        { tab: "attention", "emb.token": word, "emb.model": follow.emb_model }));
    }
    const end = follow.ends[token.index];
    if (end !== null && end !== undefined) {
      bar.appendChild(followLink(`Logit lens up to \u2018${word}\u2019 \u2197`,
        { tab: "attention", "lens.text": follow.text.slice(0, end), "lens.model": follow.lens_model }));
    }
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
    const only = shown();
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const x0 = 4, x1 = WIDTH - 4;
    const visibleHeads = active.map((on, h) => (on ? h : -1)).filter((h) => h >= 0);
    for (const h of visibleHeads) {
      ctx.strokeStyle = colours[h];
      for (let q = 0; q < T; q++) {
        if (only && only.side === "left" && only.index !== q) continue;
        const row = rowWeights(h, q);
        for (let k = 0; k < T; k++) {
          if (only && only.side === "right" && only.index !== k) continue;
          const w = row[k];
          if (w < 0.01) continue; // invisible anyway; skipping keeps 128 tokens fast
          ctx.globalAlpha = Math.min(1, w * (only ? 1 : 0.9));
          ctx.lineWidth = only ? 2 : 1.5;
          ctx.beginPath();
          ctx.moveTo(x0, TOP + ROW * q + ROW / 2);
          ctx.lineTo(x1, TOP + ROW * k + ROW / 2);
          ctx.stroke();
        }
      }
    }
    ctx.globalAlpha = 1;
  }

  function ink(colour) {
    // Black or white text, whichever reads better on the head's colour (WCAG relative luminance).
    const probe = document.createElement("canvas").getContext("2d");
    probe.fillStyle = colour;
    probe.fillRect(0, 0, 1, 1);
    const [r, g, b] = probe.getImageData(0, 0, 1, 1).data;
    const lin = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
    const luminance = 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
    return luminance > 0.179 ? "#000" : "#fff";
  }

  function paintHeads() {
    document.querySelectorAll(".head").forEach((box, h) => {
      box.style.borderColor = colours[h];
      box.style.background = active[h] ? colours[h] : "#fff";
      box.style.color = active[h] ? ink(colours[h]) : "#1f2328";
      box.setAttribute("aria-pressed", active[h] ? "true" : "false");
    });
  }

  function buildLegend() {
    const legend = document.getElementById("heads");
    colours.forEach((colour, h) => {
      const box = document.createElement("button");
      box.className = "head on";
      box.textContent = h;
      box.title = `head ${h}: click to show or hide`;
      box.setAttribute("aria-label", `head ${h}`);
      box.addEventListener("click", () => {
        active[h] = !active[h];
        box.classList.toggle("on", active[h]);
        paintHeads();
        draw();
      });
      box.addEventListener("keydown", (event) => {
        const step = { ArrowLeft: -1, ArrowRight: 1 }[event.key];
        if (step) {
          event.preventDefault();
          const boxes = document.querySelectorAll(".head");
          boxes[(h + step + H) % H].focus();
        }
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
    paintHeads();
    draw();
  }

  // The page's palette switch recolours this frame at once (assets/js/lab.js calls this).
  window.labSetPalette = (cb) => {
    colours = paletteColours(cb);
    document.body.dataset.palette = cb ? "cb" : "default";
    paintHeads();
    draw();
  };

  const started = performance.now();
  colours = paletteColours(parentPalette());
  document.body.dataset.palette = parentPalette() ? "cb" : "default";
  buildColumn("left", "left");
  buildColumn("right", "right");
  buildLegend();
  paintHeads();
  draw();
  document.body.dataset.renderMs = String(Math.round(performance.now() - started));
  document.body.dataset.ready = "1";
})();
