// The lab's page-wide client code (loaded in the page's <head>; bundled, no CDN):
//  - links: keep each tab's view in the address (history.replaceState) and follow links inside the page
//    (history.pushState, then the hidden "#lab-link-go" button asks the server to apply the new address);
//  - the colour-blind-safe palette switch, remembered in localStorage, shared with the head view's frame;
//  - a table beside every heat map drawn with plotly, for screen readers and for reading exact values;
//  - names that Gradio's own markup leaves out, for screen readers (see nameGradioParts).
(function () {
  "use strict";
  const PALETTE_KEY = "lab-palette";

  // -- links ------------------------------------------------------------------------------------------
  function scheme() {
    return window.labLinkScheme || {};
  }

  function replace(params) {
    const query = params.toString();
    window.history.replaceState(null, "", (query ? "?" + query : window.location.pathname) + window.location.hash);
  }

  let tabShown = false; // the address's tab, selected when the page has drawn its tabs (and kept while it loads)
  // The address the server is applying: the one the page was opened with (read here, before Gradio draws
  // anything), then each link followed inside the page, until the server's answer is in (null then). A tab
  // drawn for the first time reports its widgets' defaults (Gradio fires a plot's change when it mounts);
  // while an address is being applied, those must neither overwrite it nor be what the server reads.
  let applying = window.location.search;

  /** The address to apply: the one being applied, else the current one. */
  function address() {
    return applying === null ? window.location.search : applying;
  }

  /** Select the lab's tab named by the address (client-side: the server is not asked). */
  function selectTab(search) {
    const tab = new URLSearchParams(search).get("tab");
    if (!tab) return true;
    const button = document.querySelector(`#lab-tabs [role=tab][data-tab-id="${CSS.escape(tab)}"]`);
    if (!button) return false;
    if (button.getAttribute("aria-selected") === "true") return true;
    button.click();
    return false; // confirmed at the next look: the page may redraw its tabs while it loads
  }

  const labLinks = {
    /** Write one tab's view: its parameters `names` take `values`; other tabs' parameters go. */
    write(tab, names, values) {
      if (!tabShown || applying !== null) return; // the address being applied is kept until it is
      const own = scheme()[tab] || {};
      const params = new URLSearchParams(window.location.search);
      for (const key of Array.from(params.keys())) {
        if (key !== "tab" && !(key in own)) params.delete(key);
      }
      params.set("tab", tab);
      names.forEach((name, index) => {
        const value = values[index];
        params.delete(name);
        if (value === null || value === undefined || value === "") return;
        if (Array.isArray(value)) {
          if (own[name] === "texts") value.forEach((item) => params.append(name, item));
          else if (value.length) params.set(name, value.join(","));
        } else if (typeof value === "boolean") {
          params.set(name, value ? "1" : "0");
        } else {
          params.set(name, String(value));
        }
      });
      replace(params);
    },
    /** The reader switched tabs: the address names the tab (its view's parameters stay until rewritten). */
    tab(tab) {
      if (!tabShown) return;
      const params = new URLSearchParams(window.location.search);
      params.set("tab", tab);
      replace(params);
    },
    /** The address the server should apply (read by the page-load and "#lab-link-go" events). */
    query() {
      return address();
    },
    /** The server's answer to an address is in: the tabs' own events write the address again. */
    applied() {
      applying = null;
    },
    /** Follow a link inside the page: new address, then the server applies it (no reload). */
    open(href) {
      const go = document.getElementById("lab-link-go");
      if (!go) {
        window.location.href = href;
        return;
      }
      window.history.pushState(null, "", href);
      applying = window.location.search;
      selectTab(applying);
      go.click();
      window.scrollTo({ top: 0, behavior: "smooth" });
    },
  };
  window.labLinks = labLinks;

  document.addEventListener("click", (event) => {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    const anchor = event.target.closest && event.target.closest("a[href]");
    if (anchor && anchor.getAttribute("href").startsWith("?")) {
      event.preventDefault();
      labLinks.open(anchor.getAttribute("href"));
      return;
    }
    // A token of the tokenizer view opens its column's follow-link (the column header holds the same link).
    const token = event.target.closest && event.target.closest(".lab-tok .col[data-follow] .toks .t");
    if (token) labLinks.open(token.closest(".col").dataset.follow);
  });
  window.addEventListener("popstate", () => {
    const go = document.getElementById("lab-link-go");
    if (go) applying = window.location.search;
    selectTab(window.location.search);
    if (go) go.click();
  });

  // -- palette ----------------------------------------------------------------------------------------
  function stored() {
    try {
      return window.localStorage.getItem(PALETTE_KEY) === "cb";
    } catch (error) {
      return false;
    }
  }

  function applyPalette(cb) {
    if (cb) document.documentElement.dataset.palette = "cb";
    else delete document.documentElement.dataset.palette;
    const box = document.getElementById("lab-palette");
    if (box) box.checked = cb;
    document.querySelectorAll("iframe").forEach((frame) => {
      try {
        if (frame.contentWindow && frame.contentWindow.labSetPalette) frame.contentWindow.labSetPalette(cb);
      } catch (error) {
        // a frame of another origin: nothing of ours to recolour
      }
    });
  }
  window.labPalette = () => document.documentElement.dataset.palette === "cb";
  applyPalette(stored());

  document.addEventListener("change", (event) => {
    if (event.target && event.target.id === "lab-palette") {
      const cb = event.target.checked;
      try {
        window.localStorage.setItem(PALETTE_KEY, cb ? "cb" : "default");
      } catch (error) {
        // private browsing without storage: the switch still works for this page
      }
      applyPalette(cb);
    }
  });

  // -- tables beside heat maps -------------------------------------------------------------------------
  function cell(tag, text, scope) {
    const element = document.createElement(tag);
    element.textContent = text;
    if (scope) element.scope = scope;
    return element;
  }

  function shown(value) {
    return typeof value === "number" ? (Number.isInteger(value) ? String(value) : value.toFixed(3)) : String(value);
  }

  function heatmapTable(plot) {
    const trace = (plot.data || []).find((t) => t.type === "heatmap" && Array.isArray(t.z));
    if (!trace) return null;
    const rows = trace.z;
    const columns = rows.length ? rows[0].length : 0;
    const xs = trace.x || Array.from({ length: columns }, (_, i) => i);
    const ys = trace.y || Array.from({ length: rows.length }, (_, i) => i);
    const title = (plot.layout && plot.layout.title && (plot.layout.title.text || plot.layout.title)) || "Heat map";
    const details = document.createElement("details");
    details.className = "lab-table-alt";
    details.appendChild(cell("summary", "The heat map as a table"));
    const table = document.createElement("table");
    table.appendChild(cell("caption", String(title).replace(/<[^>]*>/g, "")));
    const head = table.createTHead().insertRow();
    head.appendChild(cell("th", "", "col"));
    xs.forEach((x) => head.appendChild(cell("th", shown(x), "col")));
    const body = table.createTBody();
    rows.forEach((row, r) => {
      const line = body.insertRow();
      line.appendChild(cell("th", shown(ys[r]), "row"));
      row.forEach((value) => line.appendChild(cell("td", value === null ? "" : shown(value))));
    });
    details.appendChild(table);
    return details;
  }

  // -- what Gradio's markup leaves out for screen readers and low vision -------------------------------
  // Parts of Gradio 6.31's own markup fail axe-core's serious rules and have no Python setting (the lab's
  // own widgets are fixed where they are built: the theme in app.py, alt_text on images). The lab adds
  // what is missing; each pass, after the page changes, checks again and changes only what still fails.
  function fileName(url) {
    try {
      return decodeURIComponent(new URL(url, window.location.href).pathname.split("/").pop() || "");
    } catch (error) {
      return "";
    }
  }

  function luminance(rgb) {
    const [r, g, b] = rgb.map((c) => {
      const v = c / 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  }

  const codeSheets = new WeakMap(); // a stylesheet -> its number of rules when it was last looked at

  /** gr.Code colours tokens with CodeMirror's "Nord light" palette: strings, numbers and names at 2:1 to
   * 4:1 on white. Each such colour rule is darkened, keeping its hue, to WCAG AA's 4.5:1. A dark page
   * is left alone: its code has another palette, on a dark ground. */
  function darkenCodeColours() {
    const app = document.querySelector("gradio-app");
    if (app && app.closest(".dark")) return;
    document.querySelectorAll("style").forEach((element) => {
      const sheet = element.sheet;
      if (!sheet || codeSheets.get(sheet) === sheet.cssRules.length) return;
      codeSheets.set(sheet, sheet.cssRules.length);
      for (const rule of sheet.cssRules) {
        // CodeMirror's highlight rules are one generated class each (".ͼ28"), holding a colour.
        if (!rule.style || !rule.style.color || !/^\.ͼ\w+$/.test(rule.selectorText || "")) continue;
        let rgb = (rule.style.color.match(/\d+(\.\d+)?/g) || []).slice(0, 3).map(Number);
        if (rgb.length !== 3 || 1.05 / (luminance(rgb) + 0.05) >= 4.5) continue;
        while (1.05 / (luminance(rgb) + 0.05) < 4.5) rgb = rgb.map((c) => c * 0.95);
        rule.style.color = `rgb(${rgb.map(Math.round).join(", ")})`;
      }
    });
  }

  function nameGradioParts() {
    // The "no value yet" box of an empty plot or image (Gradio's Empty) is a <div aria-label="Empty value">
    // holding one icon: a name is not allowed on a plain div (aria-prohibited-attr). It is an image of
    // "nothing yet", so it gets that role, and keeps its name.
    document.querySelectorAll("div.empty[aria-label]:not([role])").forEach((box) => {
      box.setAttribute("role", "img");
    });
    // gr.Examples draws an image example as a button holding only <img alt=""> (button-name): the image
    // is named by its file name (the book's images are named for what they show: car.png, puppy.png),
    // named again if Gradio reuses the <img> for another example.
    document.querySelectorAll("button.gallery-item img").forEach((image) => {
      if (image.closest("button").textContent.trim()) return;
      if (image.alt !== "" && image.alt !== image.dataset.labAlt) return; // an alt of Gradio's own
      image.alt = image.dataset.labAlt = fileName(image.getAttribute("src"));
    });
    // An upload box is named "Drop an image file here to upload" while it shows "Drop Image Here - or -
    // Click to Upload" (label-content-name-mismatch): it is named by what it shows, in the page's language.
    document.querySelectorAll("button.upload-container[aria-label]").forEach((button) => {
      const shown = button.textContent.replace(/\s+/g, " ").trim();
      if (shown && button.getAttribute("aria-label") !== shown) button.setAttribute("aria-label", shown);
    });
    // A gr.Code (CodeMirror) that scrolls must hold something the keyboard reaches (scrollable-region-
    // focusable). An editable one does, but by contenteditable alone, which axe-core does not count; a
    // read-only one holds nothing focusable. Its text joins the tab order, so that arrows scroll it.
    document.querySelectorAll(".cm-content:not([tabindex])").forEach((content) => {
      content.tabIndex = 0;
    });
    // A gr.Gallery thumbnail is named "Thumbnail 1 of 17" while it shows its caption (puppy.png): the name
    // must contain the visible text (label-content-name-mismatch), so the caption goes first. Gradio sets
    // its name again when the gallery changes; then the caption is put in front of its new name.
    document.querySelectorAll("button.thumbnail-item[aria-label]").forEach((button) => {
      const caption = button.querySelector(".caption-label");
      const text = caption ? caption.textContent.trim() : "";
      if (!text) return;
      const label = button.getAttribute("aria-label");
      if (label !== button.dataset.labLabel) button.dataset.labGradioLabel = label; // Gradio's own name
      const named = `${text} (${button.dataset.labGradioLabel})`;
      if (label !== named) {
        button.dataset.labLabel = named;
        button.setAttribute("aria-label", named);
      }
    });
  }

  function addTables() {
    if (!tabShown) tabShown = selectTab(address());
    document.querySelectorAll(".js-plotly-plot").forEach((plot) => {
      const maps = (plot.data || []).filter((t) => t.type === "heatmap");
      const signature = JSON.stringify(maps.map((t) => [t.x, t.y, t.z]));
      if (plot.dataset.labTable === signature) return;
      plot.dataset.labTable = signature;
      const next = plot.nextElementSibling;
      if (next && next.classList.contains("lab-table-alt")) next.remove();
      const table = heatmapTable(plot);
      if (table) plot.insertAdjacentElement("afterend", table);
    });
    const box = document.getElementById("lab-palette");
    if (box && box.checked !== window.labPalette()) box.checked = window.labPalette();
  }

  let pending = false;
  const observer = new MutationObserver(() => {
    // The address's tab first, as soon as its button exists: values a link sends to a tab's widgets are
    // kept only once the tab has drawn them, so the tab must open before the link's event answers.
    if (!tabShown) tabShown = selectTab(address());
    // What Gradio leaves out is added as soon as Gradio draws it, before anyone reads the page (a few
    // selector look-ups; what these passes change are attributes, which this observer does not watch).
    nameGradioParts();
    darkenCodeColours();
    if (pending) return;
    pending = true;
    window.setTimeout(() => {
      pending = false;
      addTables();
    }, 200);
  });
  function observe() {
    observer.observe(document.body, { childList: true, subtree: true });
    addTables();
    nameGradioParts();
    darkenCodeColours();
  }
  if (document.body) observe();
  else document.addEventListener("DOMContentLoaded", observe);
})();
