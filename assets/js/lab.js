// The lab's page-wide client code (loaded in the page's <head>; bundled, no CDN):
//  - links: keep each tab's view in the address (history.replaceState) and follow links inside the page
//    (history.pushState, then the hidden "#lab-link-go" button asks the server to apply the new address);
//  - the colour-blind-safe palette switch, remembered in localStorage, shared with the head view's frame;
//  - a table beside every heat map drawn with plotly, for screen readers and for reading exact values.
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
      if (!tabShown) return; // while the page loads, its events must not overwrite the address it opened
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
    /** Follow a link inside the page: new address, then the server applies it (no reload). */
    open(href) {
      const go = document.getElementById("lab-link-go");
      if (!go) {
        window.location.href = href;
        return;
      }
      window.history.pushState(null, "", href);
      selectTab(window.location.search);
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

  function addTables() {
    if (!tabShown) tabShown = selectTab(window.location.search);
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
    if (!tabShown) tabShown = selectTab(window.location.search);
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
  }
  if (document.body) observe();
  else document.addEventListener("DOMContentLoaded", observe);
})();
