// The live service map of meshgate's servicegraph connector: reads the gateway's own
// `api/v1/topology`, lays services out in namespace boxes (columns by call depth) and draws
// them on a 2D canvas. Self-contained: no libraries, no other network access.
// Contract (DOM ids, query parameters, `window.meshgateServiceMap`):
// crates/connectors/src/servicegraph/page.rs.
(function () {
  "use strict";

  // ---- Constants --------------------------------------------------------------------------

  const DEFAULT_WINDOW = "5m";
  const DEFAULT_REFRESH = 10;
  const FETCH_TIMEOUT_MS = 15000;
  const EXEMPLAR_FLOW_CALLS = 5; // member calls of a namespace pair whose exemplars are fetched

  /** Error levels: 0 no requests, 1 < 1 %, 2 < 5 %, 3 >= 5 %. */
  const LEVEL_STROKE = ["#adb5bd", "#2f9e44", "#e8a317", "#e03131"];
  const LEVEL_FILL = ["#f1f3f5", "#d3f9d8", "#fff3bf", "#ffe3e3"];
  const LEVEL_CLASS = ["", "ok", "warn", "bad"];
  /** Edge line widths (CSS px) by request-rate class: < 1/s, < 10/s, < 100/s, more. */
  const WIDTHS = [1, 1.8, 2.8, 4];
  const KINDS = ["service", "database", "messaging", "virtual", "user"];
  const KIND_LABEL = {
    service: "service",
    database: "database",
    messaging: "messaging system",
    virtual: "uninstrumented peer",
    user: "user (root requests)",
  };
  const CONNECTION_LABEL = {
    "": "traced on both sides",
    virtual_node: "to an uninstrumented peer",
    database: "database call",
    messaging_system: "messaging",
  };

  // Layout grid, in world units (1 unit = 1 CSS px at zoom 1).
  const DX = 190; // column pitch
  const DY = 44; // row pitch
  const HEAD = 26; // group title band
  const GAP = 56; // between group boxes
  const NO_NAMESPACE = "";

  // Zoomed-out views of big maps draw one flow per namespace pair instead of the calls
  // between namespace boxes: fully below zoom AGG_FULL, not at all from AGG_NONE up (cross-
  // fading between), and only with at least AGG_MIN_CALLS calls between boxes.
  const AGG_FULL = 0.3;
  const AGG_NONE = 0.5;
  const AGG_MIN_CALLS = 150;
  /** Work (box placements and weighted distances) the box ordering may spend: a few ms. */
  const ORDER_WORK = 600000;
  /** Fresh boxes from which the packing follows the screen's shape and the traffic. */
  const PACK_MIN_GROUPS = 6;
  /** Flow width classes; class c is FLOW_WIDTH[c] CSS px wide and FLOW_ALPHA[c] opaque. */
  const FLOW_CLASSES = 8;
  const FLOW_WIDTH = [1.2, 2, 2.8, 3.6, 4.6, 5.8, 7.2, 9];
  const FLOW_ALPHA = [0.22, 0.3, 0.38, 0.46, 0.54, 0.62, 0.7, 0.78];
  /** Flows on screen beyond which they fade (by the square root of the excess). */
  const FLOW_CROWD = 120;
  /** How much more opaque than the others dense maps draw calls of each error level. */
  const LEVEL_EMPHASIS = [0.7, 1, 1.7, 2.6];

  // ---- Formatting -------------------------------------------------------------------------

  function num(x) {
    return typeof x === "number" && isFinite(x) ? x : 0;
  }

  /** 1234 → "1.2k", 0.25 → "0.25", 12 → "12". */
  function compact(x) {
    x = num(x);
    const a = Math.abs(x);
    if (a === 0) return "0";
    if (a >= 1e9) return trim(x / 1e9) + "G";
    if (a >= 1e6) return trim(x / 1e6) + "M";
    if (a >= 1e3) return trim(x / 1e3) + "k";
    if (a >= 100) return String(Math.round(x));
    if (a >= 10) return trim(x);
    if (a >= 0.01) return String(Number(x.toPrecision(2)));
    return "<0.01";
  }
  function trim(x) {
    return x >= 100 ? String(Math.round(x)) : String(Number(x.toFixed(1)));
  }
  function fmtRate(rps) {
    return compact(rps) + "/s";
  }
  function fmtPct(r) {
    r = num(r) * 100;
    if (r === 0) return "0%";
    if (r < 0.1) return "<0.1%";
    if (r < 10) return Number(r.toFixed(1)) + "%";
    return Math.round(r) + "%";
  }
  function fmtSeconds(s) {
    if (typeof s !== "number" || !isFinite(s)) return "–";
    if (s < 0.001) return Number((s * 1000).toPrecision(2)) + " ms";
    if (s < 0.01) return Number((s * 1000).toFixed(1)) + " ms";
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 60) return Number(s.toPrecision(3)) + " s";
    return Math.round(s / 60) + " min";
  }
  function fmtCount(n) {
    n = num(n);
    return n >= 10000 ? compact(n) : String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }
  function clockTime(d) {
    const p = (v) => String(v).padStart(2, "0");
    return p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
  }
  function errorLevel(requests, rate) {
    if (!(num(requests) > 0)) return 0;
    if (rate < 0.01) return 1;
    if (rate < 0.05) return 2;
    return 3;
  }
  function widthClass(rps) {
    return rps < 1 ? 0 : rps < 10 ? 1 : rps < 100 ? 2 : 3;
  }
  function p95(lat) {
    return lat && typeof lat.p95 === "number" ? lat.p95 : null;
  }

  // ---- Model ------------------------------------------------------------------------------

  /**
   * Turns the topology JSON into indexed nodes and edges. Edges naming a node the answer
   * does not list get a placeholder node, so a partial answer still draws.
   */
  function buildModel(json) {
    if (!json || typeof json !== "object" || !Array.isArray(json.nodes) || !Array.isArray(json.edges)) {
      throw new Error("the topology answer has no `nodes` and `edges` arrays");
    }
    const nodes = [];
    const byId = new Map();
    const addNode = (n) => {
      const id = String(n.id);
      if (byId.has(id)) return byId.get(id);
      const kind = KINDS.includes(n.kind) ? n.kind : "service";
      const node = {
        i: nodes.length,
        id,
        name: n.name != null ? String(n.name) : id,
        ns: n.namespace != null && n.namespace !== "" ? String(n.namespace) : null,
        kind,
        requests: num(n.requests),
        rps: num(n.requests_per_second),
        failed: num(n.failed),
        err: num(n.error_rate),
        lat: n.latency_seconds || null,
        out: [],
        inc: [],
        level: 0,
        r: 8,
        depth: 0,
        x: 0,
        y: 0,
      };
      node.level = errorLevel(node.requests, node.err);
      node.r = Math.min(16, 7 + 2.4 * Math.log10(1 + node.rps));
      node.lname = node.name.toLowerCase();
      node.lid = id.toLowerCase();
      nodes.push(node);
      byId.set(id, node);
      return node;
    };
    for (const n of json.nodes) if (n && n.id != null) addNode(n);
    const edges = [];
    const edgeById = new Map();
    for (const e of json.edges) {
      if (!e || e.source == null || e.target == null) continue;
      const s = byId.get(String(e.source)) || addNode({ id: e.source, kind: "virtual" });
      const t = byId.get(String(e.target)) || addNode({ id: e.target, kind: "virtual" });
      const id = e.id != null ? String(e.id) : s.id + "->" + t.id;
      if (edgeById.has(id)) continue;
      const edge = {
        i: edges.length,
        id,
        s,
        t,
        conn: typeof e.connection_type === "string" ? e.connection_type : "",
        requests: num(e.requests),
        rps: num(e.requests_per_second),
        failed: num(e.failed),
        err: num(e.error_rate),
        client: e.client_latency_seconds || null,
        server: e.server_latency_seconds || null,
        network: e.network_latency_seconds || null,
        level: 0,
        wc: 0,
        bidi: false,
        self: s === t,
        ax: 0, ay: 0, bx: 0, by: 0,
        minX: 0, minY: 0, maxX: 0, maxY: 0,
      };
      edge.level = errorLevel(edge.requests, edge.err);
      edge.wc = widthClass(edge.rps);
      edges.push(edge);
      edgeById.set(id, edge);
      s.out.push(edge);
      t.inc.push(edge);
    }
    for (const e of edges) e.bidi = !e.self && edgeById.has(e.t.id + "->" + e.s.id);
    // Draw order buckets, fixed for the life of the model.
    const edgeBuckets = [];
    for (let l = 0; l < 4; l++) for (let w = 0; w < 4; w++) edgeBuckets.push([]);
    for (const e of edges) edgeBuckets[e.level * 4 + e.wc].push(e);
    return {
      nodes,
      edges,
      byId,
      edgeById,
      edgeBuckets,
      windowSeconds: num(json.window_seconds),
      generatedAt: json.generated_at || null,
    };
  }

  // ---- Layout -----------------------------------------------------------------------------

  /**
   * Call depth of every node: the longest path from a root (`user` first, then nodes nobody
   * calls, then whatever only cycles reach), over the graph with its back edges removed.
   */
  function computeDepths(model) {
    const { nodes } = model;
    const n = nodes.length;
    const state = new Uint8Array(n); // 0 new, 1 on stack, 2 done
    const back = new Uint8Array(model.edges.length);
    const post = [];
    const starts = nodes
      .filter((v) => v.inc.every((e) => e.self))
      .sort((a, b) => (b.kind === "user") - (a.kind === "user") || cmpStr(a.id, b.id));
    const rest = nodes.slice().sort((a, b) => cmpStr(a.id, b.id));
    const stackNode = [];
    const stackEdge = [];
    const visit = (root) => {
      if (state[root.i]) return;
      state[root.i] = 1;
      stackNode.push(root);
      stackEdge.push(0);
      while (stackNode.length) {
        const top = stackNode.length - 1;
        const v = stackNode[top];
        const k = stackEdge[top];
        if (k < v.out.length) {
          stackEdge[top] = k + 1;
          const e = v.out[k];
          const w = e.t;
          if (state[w.i] === 1) back[e.i] = 1;
          else if (state[w.i] === 0) {
            state[w.i] = 1;
            stackNode.push(w);
            stackEdge.push(0);
          }
        } else {
          state[v.i] = 2;
          post.push(v);
          stackNode.pop();
          stackEdge.pop();
        }
      }
    };
    for (const v of starts) visit(v);
    for (const v of rest) visit(v);
    for (const v of nodes) v.depth = 0;
    for (let k = post.length - 1; k >= 0; k--) {
      const v = post[k];
      for (const e of v.out) {
        if (!back[e.i] && !e.self && e.t.depth < v.depth + 1) e.t.depth = v.depth + 1;
      }
    }
  }

  function cmpStr(a, b) {
    return a < b ? -1 : a > b ? 1 : 0;
  }
  function groupKey(node) {
    return node.ns == null ? NO_NAMESPACE : node.ns;
  }

  /**
   * Lays the nodes of one namespace out in local coordinates (`lx`, `ly`): one column per
   * call depth (neighbouring depths share a column in deep graphs), ordered by a few barycentre sweeps to cut crossings, tall columns wrapped.
   * Returns the box size.
   */
  function layoutGroup(members) {
    const depths = Array.from(new Set(members.map((v) => v.depth))).sort((a, b) => a - b);
    // Deep call chains share columns (neighbouring depths binned) so a box stays compact.
    const maxCols = Math.max(6, Math.ceil(Math.sqrt(members.length * 0.4)));
    const ncols = Math.min(depths.length, maxCols);
    const colOf = new Map(depths.map((d, i) => [d, Math.floor((i * ncols) / depths.length)]));
    const cols = Array.from({ length: ncols }, () => []);
    const sorted = members.slice().sort((a, b) => cmpStr(a.name, b.name) || cmpStr(a.id, b.id));
    const inGroup = new Set(members);
    for (const v of sorted) {
      v.col = colOf.get(v.depth);
      cols[v.col].push(v);
    }
    const setOrd = (col) => {
      const d = Math.max(1, col.length - 1);
      col.forEach((v, i) => (v.ord = i / d));
    };
    cols.forEach(setOrd);
    const reorder = (col, side) => {
      for (const v of col) {
        let sum = 0;
        let cnt = 0;
        for (const e of v.inc) {
          const u = e.s;
          if (u !== v && inGroup.has(u) && side(u.col, v.col)) (sum += u.ord), cnt++;
        }
        for (const e of v.out) {
          const u = e.t;
          if (u !== v && inGroup.has(u) && side(u.col, v.col)) (sum += u.ord), cnt++;
        }
        v.bary = cnt ? sum / cnt : v.ord;
      }
      col.sort((a, b) => a.bary - b.bary || a.ord - b.ord);
      setOrd(col);
    };
    for (let pass = 0; pass < 3; pass++) {
      for (let c = 1; c < cols.length; c++) reorder(cols[c], (uc, vc) => uc < vc);
      for (let c = cols.length - 2; c >= 0; c--) reorder(cols[c], (uc, vc) => uc > vc);
    }
    // Wrap tall columns into sub-columns so a namespace stays roughly square.
    const maxRows = Math.max(8, Math.ceil(Math.sqrt(members.length) * 1.5));
    const chunks = [];
    for (const col of cols) {
      const parts = Math.ceil(col.length / maxRows);
      const per = Math.ceil(col.length / parts);
      for (let p = 0; p < parts; p++) chunks.push(col.slice(p * per, (p + 1) * per));
    }
    const rows = Math.max(...chunks.map((c) => c.length));
    chunks.forEach((chunk, c) => {
      const offset = (rows - chunk.length) / 2;
      chunk.forEach((v, r) => {
        v.lx = DX / 2 + c * DX;
        v.ly = HEAD + DY / 2 + (offset + r) * DY;
      });
    });
    return { w: chunks.length * DX, h: HEAD + rows * DY };
  }

  /** A group's box from its members' positions (the inverse of `layoutGroup`'s margins). */
  function boxAround(members) {
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const v of members) {
      if (v.x < x0) x0 = v.x;
      if (v.y < y0) y0 = v.y;
      if (v.x > x1) x1 = v.x;
      if (v.y > y1) y1 = v.y;
    }
    return { x: x0 - DX / 2, y: y0 - HEAD - DY / 2, w: x1 - x0 + DX, h: y1 - y0 + HEAD + DY };
  }

  function groupLabel(key) {
    return key === NO_NAMESPACE ? "no namespace" : key;
  }

  /** Shelf-packs fresh group boxes, left to right, rows `width` wide, from (x, y). */
  function packGroups(groups, x0, y0, width) {
    let x = x0, y = y0, shelf = 0;
    for (const g of groups) {
      if (x > x0 && x + g.w > x0 + width) {
        x = x0;
        y += shelf + GAP;
        shelf = 0;
      }
      g.x = x;
      g.y = y;
      x += g.w + GAP;
      shelf = Math.max(shelf, g.h);
    }
  }

  /**
   * A shelf width that packs `groups` about `ratio` times as wide as high: shelves leave
   * ragged ends and gaps, so a few rounds of packing correct the first guess.
   */
  function fitShelves(groups, width, ratio) {
    const widest = Math.max(...groups.map((g) => g.w));
    let best = width, bestErr = Infinity;
    for (let round = 0; round < 6; round++) {
      packGroups(groups, 0, 0, width);
      const b = bounds(groups);
      const actual = (b.x1 - b.x0) / Math.max(1, b.y1 - b.y0);
      const err = Math.abs(Math.log(actual / ratio));
      if (err < bestErr) (best = width), (bestErr = err);
      if (err < 0.08) break;
      width = Math.max(widest, width * Math.sqrt(ratio / actual));
    }
    return best;
  }

  /**
   * Places every node of `model`. Nodes with a remembered position (`memory`: id →
   * {x, y, g}) keep it; new nodes join their namespace's box in the column of their depth,
   * or get a fresh box below the map; boxes that then overlap are moved down whole. Fresh
   * boxes are packed about `aspect` (width / height, default 1.6) wide, namespaces that
   * call each other a lot next to each other.
   */
  function layoutModel(model, memory, aspect) {
    computeDepths(model);
    const groups = new Map();
    for (const v of model.nodes) {
      const key = groupKey(v);
      let g = groups.get(key);
      if (!g) groups.set(key, (g = { key, label: groupLabel(key), members: [], x: 0, y: 0, w: 0, h: 0 }));
      g.members.push(v);
      v.g = g;
    }
    // Remembered positions, unless another node has taken the spot meanwhile.
    const taken = new Map();
    const cell = (x, y) => Math.round(x / DX) + "," + Math.round(y / DY);
    const placed = [];
    const fresh = [];
    for (const v of model.nodes) {
      const m = memory.get(v.id);
      if (m && m.g === groupKey(v) && !taken.has(cell(m.x, m.y))) {
        v.x = m.x;
        v.y = m.y;
        v.placed = true;
        taken.set(cell(v.x, v.y), v);
        placed.push(v);
      } else {
        v.placed = false;
        fresh.push(v);
      }
    }
    const newGroups = [];
    for (const g of groups.values()) {
      const old = g.members.filter((v) => v.placed);
      const add = g.members.filter((v) => !v.placed);
      if (!add.length) continue;
      if (!old.length) {
        const size = layoutGroup(g.members);
        g.w = size.w;
        g.h = size.h;
        newGroups.push(g);
        continue;
      }
      // Join an existing box: the column of the nearest depth, below its lowest node.
      for (const v of add.sort((a, b) => a.depth - b.depth || cmpStr(a.name, b.name))) {
        let best = old[0];
        for (const u of old) {
          const d = Math.abs(u.depth - v.depth), bd = Math.abs(best.depth - v.depth);
          if (d < bd || (d === bd && u.depth > best.depth)) best = u;
        }
        let x = best.x;
        if (best.depth < v.depth) x = Math.max(...old.map((u) => u.x)) + DX;
        else if (best.depth > v.depth) x = Math.min(...old.map((u) => u.x)) - DX;
        let y = -Infinity;
        for (const u of old) if (Math.abs(u.x - x) < 1 && u.y > y) y = u.y;
        y = y === -Infinity ? Math.min(...old.map((u) => u.y)) : y + DY;
        while (taken.has(cell(x, y))) y += DY;
        v.x = x;
        v.y = y;
        v.placed = true;
        taken.set(cell(x, y), v);
        old.push(v);
      }
    }
    const existing = [];
    for (const g of groups.values()) {
      if (newGroups.includes(g)) continue;
      Object.assign(g, boxAround(g.members));
      existing.push(g);
    }
    if (newGroups.length) {
      // Upstream namespaces first (the one with `user` leads), then the bigger ones.
      const minDepth = (g) => Math.min(...g.members.map((v) => v.depth));
      const hasUser = (g) => g.members.some((v) => v.kind === "user");
      newGroups.sort(
        (a, b) => hasUser(b) - hasUser(a) || minDepth(a) - minDepth(b) ||
          b.members.length - a.members.length || cmpStr(a.key, b.key),
      );
      const area = newGroups.reduce((s, g) => s + (g.w + GAP) * (g.h + GAP), 0);
      // Small maps keep the plain packing; big ones take the screen's shape and put the
      // namespaces that talk to each other side by side.
      const big = newGroups.length >= PACK_MIN_GROUPS;
      const ratio = big && aspect > 0 && isFinite(aspect) ? aspect : 1.6;
      let x0 = 0, y0 = 0, width = Math.max(Math.sqrt(area * ratio), ...newGroups.map((g) => g.w));
      if (existing.length) {
        const b = bounds(existing);
        x0 = b.x0;
        y0 = b.y1 + GAP;
        width = Math.max(width, b.x1 - b.x0);
      }
      if (big && !existing.length) width = fitShelves(newGroups, width, ratio);
      if (big) orderByTraffic(model, newGroups, existing, x0, y0, width);
      packGroups(newGroups, x0, y0, width);
      for (const g of newGroups) {
        for (const v of g.members) {
          v.x = g.x + v.lx;
          v.y = g.y + v.ly;
        }
      }
    }
    const all = Array.from(groups.values());
    separate(all);
    for (const v of model.nodes) memory.set(v.id, { x: v.x, y: v.y, g: groupKey(v) });
    // Forget long-gone nodes once the memory is much bigger than the map.
    if (memory.size > 4 * model.nodes.length + 2000) {
      for (const id of Array.from(memory.keys())) if (!model.byId.has(id)) memory.delete(id);
    }
    model.groups = all;
    aggregate(model);
    return model;
  }

  /**
   * Reorders fresh boxes (before `packGroups`) so namespaces that call each other a lot sit
   * close together: pairwise swaps of the packing order, kept while they shorten the sum of
   * box-centre distances weighted by the requests/s between the boxes. A few passes within a
   * work budget (ORDER_WORK); `fixed` boxes keep their place but pull their partners near.
   */
  function orderByTraffic(model, groups, fixed, x0, y0, width) {
    const n = groups.length;
    if (n < 3) return;
    const index = new Map();
    groups.forEach((g, i) => index.set(g, i));
    fixed.forEach((g, i) => index.set(g, n + i));
    let mean = 0;
    for (const e of model.edges) mean += e.rps;
    mean = model.edges.length ? mean / model.edges.length : 0;
    // Every call counts a little even without requests/s, so idle maps still cluster.
    const floor = mean > 0 ? mean * 0.1 : 1;
    const total = n + fixed.length;
    const weight = new Map();
    for (const e of model.edges) {
      const a = index.get(e.s.g), b = index.get(e.t.g);
      if (a === undefined || b === undefined || a === b || (a >= n && b >= n)) continue;
      const key = a < b ? a * total + b : b * total + a;
      weight.set(key, (weight.get(key) || 0) + e.rps + floor);
    }
    if (!weight.size) return;
    const pa = new Int32Array(weight.size), pb = new Int32Array(weight.size), pw = new Float64Array(weight.size);
    let p = 0;
    for (const [key, w] of weight) {
      pa[p] = Math.floor(key / total);
      pb[p] = key % total;
      pw[p++] = w;
    }
    const cx = new Float64Array(total), cy = new Float64Array(total);
    fixed.forEach((g, i) => {
      cx[n + i] = g.x + g.w / 2;
      cy[n + i] = g.y + g.h / 2;
    });
    const order = groups.slice();
    const cost = () => {
      packGroups(order, x0, y0, width);
      for (const g of order) {
        const k = index.get(g);
        cx[k] = g.x + g.w / 2;
        cy[k] = g.y + g.h / 2;
      }
      let c = 0;
      for (let i = 0; i < pw.length; i++) {
        const dx = cx[pa[i]] - cx[pb[i]], dy = cy[pa[i]] - cy[pb[i]];
        c += pw[i] * Math.sqrt(dx * dx + dy * dy);
      }
      return c;
    };
    let best = cost();
    // A fixed amount of work (not time), so a map lays out the same on every machine.
    let budget = Math.floor(ORDER_WORK / (n + pw.length));
    search: for (let pass = 0; pass < 4; pass++) {
      let improved = false;
      for (let i = 0; i < n - 1; i++) {
        for (let j = i + 1; j < n; j++) {
          const gi = order[i];
          order[i] = order[j];
          order[j] = gi;
          const c = cost();
          budget--;
          if (c < best * 0.999) {
            best = c;
            improved = true;
          } else {
            order[j] = order[i];
            order[i] = gi;
          }
        }
        if (budget <= 0) break search;
      }
      if (!improved) break;
    }
    for (let i = 0; i < n; i++) groups[i] = order[i];
  }

  /**
   * Namespace-to-namespace flows: every call between two boxes summed into one directed
   * flow (requests, failures, members), which the zoomed-out view of a big map draws instead
   * of the individual calls. Also splits the draw buckets into calls inside a box and calls
   * between boxes.
   */
  function aggregate(model) {
    const flows = [];
    const flowById = new Map();
    const intra = [], inter = [];
    for (let b = 0; b < 16; b++) intra.push([]), inter.push([]);
    for (const e of model.edges) {
      const a = e.s.g, b = e.t.g;
      e.flow = null;
      if (a === b) {
        intra[e.level * 4 + e.wc].push(e);
        continue;
      }
      inter[e.level * 4 + e.wc].push(e);
      const id = a.key + "->" + b.key;
      let f = flowById.get(id);
      if (!f) {
        f = { id, src: a, dst: b, edges: [], rps: 0, requests: 0, failed: 0, err: 0, level: 0, worst: 0, wc: 0, reverse: null };
        flowById.set(id, f);
        flows.push(f);
      }
      f.edges.push(e);
      f.rps += e.rps;
      f.requests += e.requests;
      f.failed += e.failed;
      if (e.level > f.worst) f.worst = e.level;
      e.flow = f;
    }
    let maxRps = 0, maxCalls = 0;
    for (const f of flows) {
      f.err = f.requests > 0 ? f.failed / f.requests : 0;
      f.level = errorLevel(f.requests, f.err);
      f.reverse = flowById.get(f.dst.key + "->" + f.src.key) || null;
      maxRps = Math.max(maxRps, f.rps);
      maxCalls = Math.max(maxCalls, f.edges.length);
    }
    // Width classes relative to the biggest flow (square root: area-like), errors drawn last.
    for (const f of flows) {
      const share = maxRps > 0 ? f.rps / maxRps : f.edges.length / maxCalls;
      f.wc = Math.min(FLOW_CLASSES - 1, Math.floor(Math.sqrt(share) * FLOW_CLASSES));
    }
    flows.sort((a, b) => a.level - b.level || a.wc - b.wc || cmpStr(a.id, b.id));
    model.flows = flows;
    model.flowById = flowById;
    model.intraBuckets = intra;
    model.interBuckets = inter;
    model.interCount = inter.reduce((n, b) => n + b.length, 0);
  }

  /** Moves overlapping group boxes down (rigidly, with their nodes) until none overlap. */
  function separate(groups) {
    const order = groups.slice().sort((a, b) => a.y - b.y || a.x - b.x);
    const done = [];
    for (const g of order) {
      let moved = true;
      while (moved) {
        moved = false;
        for (const o of done) {
          if (g.x < o.x + o.w + GAP / 2 && o.x < g.x + g.w + GAP / 2 &&
              g.y < o.y + o.h + GAP / 2 && o.y < g.y + g.h + GAP / 2) {
            const dy = o.y + o.h + GAP - g.y;
            g.y += dy;
            for (const v of g.members) v.y += dy;
            moved = true;
          }
        }
      }
      done.push(g);
    }
  }

  function bounds(groups) {
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const g of groups) {
      x0 = Math.min(x0, g.x);
      y0 = Math.min(y0, g.y);
      x1 = Math.max(x1, g.x + g.w);
      y1 = Math.max(y1, g.y + g.h);
    }
    return { x0, y0, x1, y1 };
  }

  /** Edge end points (trimmed to the node outlines, pairs of opposite calls side by side). */
  function edgeGeometry(model) {
    for (const e of model.edges) {
      const s = e.s, t = e.t;
      if (e.self) {
        // A loop above the node.
        e.cx = s.x;
        e.cy = s.y - s.r - 7;
        e.loop = 8;
        e.ax = e.bx = e.cx;
        e.ay = e.by = e.cy - e.loop;
        e.minX = e.cx - 8; e.maxX = e.cx + 8; e.minY = e.cy - 8; e.maxY = e.cy + 8;
        continue;
      }
      let dx = t.x - s.x, dy = t.y - s.y;
      const len = Math.hypot(dx, dy) || 1;
      dx /= len;
      dy /= len;
      const off = e.bidi ? 3.5 : 0;
      const ox = -dy * off, oy = dx * off;
      e.ax = s.x + dx * s.r + ox;
      e.ay = s.y + dy * s.r + oy;
      e.bx = t.x - dx * (t.r + 1.5) + ox;
      e.by = t.y - dy * (t.r + 1.5) + oy;
      e.ux = dx;
      e.uy = dy;
      e.minX = Math.min(e.ax, e.bx); e.maxX = Math.max(e.ax, e.bx);
      e.minY = Math.min(e.ay, e.by); e.maxY = Math.max(e.ay, e.by);
    }
    for (const f of model.flows || []) flowGeometry(f);
    // Spatial grid of nodes for hit testing.
    const size = 96;
    const grid = new Map();
    let maxR = 0;
    for (const v of model.nodes) {
      const k = Math.floor(v.x / size) + "," + Math.floor(v.y / size);
      let c = grid.get(k);
      if (!c) grid.set(k, (c = []));
      c.push(v);
      maxR = Math.max(maxR, v.r);
    }
    model.grid = { size, cells: grid, maxR };
  }

  /**
   * A flow runs between the borders of its two boxes, on the line joining their centres
   * (`ax`..`by`, direction `ux`, `uy`); it ends where it enters the target box, so
   * neighbouring boxes get a short bridge and the boxes' insides stay readable.
   */
  function flowGeometry(f) {
    const A = f.src, B = f.dst;
    const cx = A.x + A.w / 2, cy = A.y + A.h / 2;
    const dx = B.x + B.w / 2 - cx, dy = B.y + B.h / 2 - cy;
    const len = Math.hypot(dx, dy) || 1;
    // Leaving A: the first box side the ray crosses; entering B: the last slab entry.
    const leave = Math.min(
      dx > 0 ? (A.x + A.w - cx) / dx : dx < 0 ? (A.x - cx) / dx : Infinity,
      dy > 0 ? (A.y + A.h - cy) / dy : dy < 0 ? (A.y - cy) / dy : Infinity,
    );
    const enter = Math.max(
      dx > 0 ? (B.x - cx) / dx : dx < 0 ? (B.x + B.w - cx) / dx : -Infinity,
      dy > 0 ? (B.y - cy) / dy : dy < 0 ? (B.y + B.h - cy) / dy : -Infinity,
    );
    const t0 = enter > leave && leave > 0 ? leave : 0, t1 = enter > leave && enter < 1 ? enter : 1;
    f.ax = cx + dx * t0;
    f.ay = cy + dy * t0;
    f.bx = cx + dx * t1;
    f.by = cy + dy * t1;
    f.ux = dx / len;
    f.uy = dy / len;
    f.minX = Math.min(f.ax, f.bx); f.maxX = Math.max(f.ax, f.bx);
    f.minY = Math.min(f.ay, f.by); f.maxY = Math.max(f.ay, f.by);
  }

  // Exported for `node` checks of the layout outside a browser.
  if (typeof module === "object" && module.exports) {
    module.exports = { buildModel, layoutModel, edgeGeometry, compact, fmtPct, fmtSeconds, fmtRate };
  }
  if (typeof document === "undefined") return;

  // ---- Page state -------------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);
  const mapEl = $("map");
  const canvas = mapEl.querySelector("canvas");
  const ctx = canvas.getContext("2d");
  const detailsEl = $("details");
  const bannerEl = $("banner");
  const statusEl = $("status");
  const tooltipEl = $("tooltip");
  const windowEl = $("window");
  const refreshEl = $("refresh");
  const searchEl = $("search");

  const params = new URLSearchParams(location.search);
  const component = params.get("component") || "";
  const memory = new Map();
  const view = { s: 1, tx: 0, ty: 0 };
  const st = {
    model: null,
    ready: false,
    renders: 0,
    loads: 0,
    lastLoad: null,
    lastDrawMs: 0,
    lastError: null,
    selected: null, // {kind, id}
    hover: null, // {kind, item}
    matches: null, // Set of nodes matching the search box
    fitted: false,
    cssW: 0,
    cssH: 0,
    dpr: 1,
    frame: 0,
    timer: 0,
    chain: Promise.resolve(),
    missedRefresh: false,
  };

  function chooseOption(select, value, label) {
    if (!Array.from(select.options).some((o) => o.value === value)) {
      const o = document.createElement("option");
      o.value = value;
      o.textContent = label;
      select.appendChild(o);
    }
    select.value = value;
  }
  chooseOption(windowEl, params.get("window") || DEFAULT_WINDOW, params.get("window") || DEFAULT_WINDOW);
  {
    const r = params.get("refresh");
    const secs = r != null && /^\d+$/.test(r) ? Number(r) : DEFAULT_REFRESH;
    chooseOption(refreshEl, String(secs), secs === 0 ? "off" : secs + "s");
  }
  if (component) $("component-name").textContent = "· " + component;

  function syncUrl() {
    const p = new URLSearchParams(location.search);
    p.set("window", windowEl.value);
    p.set("refresh", refreshEl.value);
    history.replaceState(null, "", location.pathname + "?" + p.toString() + location.hash);
  }

  // ---- Drawing ----------------------------------------------------------------------------

  function resize() {
    const w = mapEl.clientWidth, h = mapEl.clientHeight;
    const dpr = Math.min(2, window.devicePixelRatio || 1);
    if (w === st.cssW && h === st.cssH && dpr === st.dpr) return false;
    st.cssW = w;
    st.cssH = h;
    st.dpr = dpr;
    canvas.width = Math.max(1, Math.round(w * dpr));
    canvas.height = Math.max(1, Math.round(h * dpr));
    return true;
  }

  /** The shape fresh boxes are packed to: the map's, within reason. */
  function layoutAspect() {
    return st.cssW > 0 && st.cssH > 0 ? Math.max(1, Math.min(3, st.cssW / st.cssH)) : 1.6;
  }

  function fit() {
    const m = st.model;
    if (!m || !m.groups || !m.groups.length || !st.cssW) return;
    const b = bounds(m.groups);
    const w = b.x1 - b.x0, h = b.y1 - b.y0;
    const s = Math.max(0.01, Math.min(1.5, (st.cssW - 40) / w, (st.cssH - 40) / h));
    view.s = s;
    view.tx = (st.cssW - w * s) / 2 - b.x0 * s;
    view.ty = (st.cssH - h * s) / 2 - b.y0 * s;
  }

  /** The nodes and edges to emphasise: the hovered or selected item and its neighbours. */
  function focusSet() {
    const m = st.model;
    const picks = [st.hover, st.selected && itemOf(st.selected.kind, st.selected.id)].filter(Boolean);
    if (!m || (!picks.length && !st.matches)) return null;
    const nodes = new Set();
    const edges = new Set();
    const addNode = (v) => {
      nodes.add(v);
      for (const e of v.out) (edges.add(e), nodes.add(e.t));
      for (const e of v.inc) (edges.add(e), nodes.add(e.s));
    };
    for (const pick of picks) {
      if (pick.kind === "node") addNode(pick.item);
      else if (pick.kind === "namespaces") {
        for (const e of pick.item.edges) (edges.add(e), nodes.add(e.s), nodes.add(e.t));
      } else {
        edges.add(pick.item);
        nodes.add(pick.item.s);
        nodes.add(pick.item.t);
      }
    }
    if (st.matches) for (const v of st.matches) nodes.add(v);
    return { nodes, edges };
  }

  function itemOf(kind, id) {
    const m = st.model;
    if (!m) return null;
    const item =
      kind === "node" ? m.byId.get(id) : kind === "edge" ? m.edgeById.get(id) : kind === "namespaces" ? m.flowById.get(id) : null;
    return item ? { kind, item } : null;
  }

  /** Node radius in world units: its size, but never under 2.5 CSS px on screen. */
  function radius(v) {
    return Math.max(v.r, 2.5 / view.s);
  }

  function shapePath(v, grow) {
    const r = radius(v) + grow;
    switch (v.kind) {
      case "database":
        ctx.rect(v.x - r * 0.9, v.y - r * 0.9, r * 1.8, r * 1.8);
        break;
      case "messaging":
        ctx.moveTo(v.x, v.y - r * 1.15);
        ctx.lineTo(v.x + r * 1.15, v.y);
        ctx.lineTo(v.x, v.y + r * 1.15);
        ctx.lineTo(v.x - r * 1.15, v.y);
        ctx.closePath();
        break;
      case "user":
        ctx.moveTo(v.x, v.y - r * 1.2);
        ctx.lineTo(v.x + r * 1.1, v.y + r * 0.8);
        ctx.lineTo(v.x - r * 1.1, v.y + r * 0.8);
        ctx.closePath();
        break;
      default:
        ctx.moveTo(v.x + r, v.y);
        ctx.arc(v.x, v.y, r, 0, Math.PI * 2);
    }
  }

  function edgePath(e) {
    if (e.self) {
      ctx.moveTo(e.cx + e.loop, e.cy);
      ctx.arc(e.cx, e.cy, e.loop, 0, Math.PI * 2);
    } else {
      ctx.moveTo(e.ax, e.ay);
      ctx.lineTo(e.bx, e.by);
    }
  }

  function arrowPath(e, size) {
    if (e.self) return;
    const x = e.bx, y = e.by, ux = e.ux, uy = e.uy;
    ctx.moveTo(x, y);
    ctx.lineTo(x - ux * size - uy * size * 0.5, y - uy * size + ux * size * 0.5);
    ctx.lineTo(x - ux * size + uy * size * 0.5, y - uy * size - ux * size * 0.5);
    ctx.closePath();
  }

  /**
   * How far the view shows namespace flows instead of the calls between boxes: 1 zoomed
   * out on a big map, 0 zoomed in (or on a small map), in between while cross-fading.
   */
  function aggregation(m) {
    if (!m || !m.flows || m.interCount < AGG_MIN_CALLS) return 0;
    return Math.max(0, Math.min(1, (AGG_NONE - view.s) / (AGG_NONE - AGG_FULL)));
  }

  /** End points of flow `f` at zoom `s`, opposite flows side by side. */
  function flowEnds(f, s) {
    const off = f.reverse ? (FLOW_WIDTH[f.wc] / 2 + 1.5) / s : 0;
    const ox = -f.uy * off, oy = f.ux * off;
    return [f.ax + ox, f.ay + oy, f.bx + ox, f.by + oy];
  }

  /** Arrow head size of flow `f` (world units at zoom `s`). */
  function flowHead(f, s) {
    return (FLOW_WIDTH[f.wc] * 1.1 + 6) / s;
  }

  /** Flows under the pointer or selected. */
  function pickedFlows() {
    const out = [];
    if (st.hover && st.hover.kind === "namespaces") out.push(st.hover.item);
    const sel = st.selected && st.selected.kind === "namespaces" && itemOf("namespaces", st.selected.id);
    if (sel && !out.includes(sel.item)) out.push(sel.item);
    return out;
  }

  /**
   * Namespace flows, `agg` opaque: one line per namespace pair from box border to box
   * border, as wide as its share of the requests, coloured by its combined error rate
   * (failing ones last); a red dot marks a flow that holds a failing call although the
   * flow as a whole is healthier.
   */
  function drawFlows(m, agg, focus, s, vx0, vy0, vx1, vy1) {
    const flows = m.flows;
    const inView = (f) => f.maxX > vx0 && f.minX < vx1 && f.maxY > vy0 && f.minY < vy1;
    let shown = 0;
    for (const f of flows) if (inView(f)) shown++;
    // Many flows (namespaces that all call each other) fade like dense calls do.
    const dim = (focus ? 0.3 : 1) * Math.max(0.3, Math.min(1, Math.sqrt(FLOW_CROWD / Math.max(1, shown))));
    ctx.lineCap = "butt";
    const marks = [];
    for (let i = 0; i < flows.length; ) {
      const level = flows[i].level, wc = flows[i].wc;
      const run = [];
      for (; i < flows.length && flows[i].level === level && flows[i].wc === wc; i++) {
        if (inView(flows[i])) run.push(flows[i]);
      }
      if (!run.length) continue;
      ctx.beginPath();
      for (const f of run) {
        const [ax, ay, bx, by] = flowEnds(f, s);
        const head = Math.min(flowHead(f, s), Math.hypot(bx - ax, by - ay) * 0.6);
        ctx.moveTo(ax, ay);
        ctx.lineTo(bx - f.ux * head * 0.7, by - f.uy * head * 0.7);
        if (f.worst === 3 && f.level < 3) marks.push(f);
      }
      ctx.globalAlpha = agg * dim * Math.min(0.9, FLOW_ALPHA[wc] * (level >= 2 ? 1.6 : 1));
      ctx.strokeStyle = LEVEL_STROKE[level];
      ctx.lineWidth = FLOW_WIDTH[wc] / s;
      ctx.stroke();
      ctx.beginPath();
      for (const f of run) flowArrowPath(f, s);
      ctx.fillStyle = LEVEL_STROKE[level];
      ctx.fill();
    }
    if (marks.length) {
      ctx.globalAlpha = agg * dim;
      ctx.beginPath();
      for (const f of marks) {
        const [ax, ay, bx, by] = flowEnds(f, s);
        const x = ax + (bx - ax) * 0.5, y = ay + (by - ay) * 0.5, r = 2.5 / s;
        ctx.moveTo(x + r, y);
        ctx.arc(x, y, r, 0, Math.PI * 2);
      }
      ctx.fillStyle = LEVEL_STROKE[3];
      ctx.fill();
      ctx.lineWidth = 1 / s;
      ctx.strokeStyle = "#ffffff";
      ctx.stroke();
    }
    for (const f of pickedFlows()) {
      const [ax, ay, bx, by] = flowEnds(f, s);
      ctx.globalAlpha = 0.35;
      ctx.beginPath();
      ctx.moveTo(ax, ay);
      ctx.lineTo(bx, by);
      ctx.strokeStyle = "#212529";
      ctx.lineWidth = (FLOW_WIDTH[f.wc] + 4) / s;
      ctx.stroke();
      ctx.globalAlpha = Math.max(agg, 0.6);
      ctx.beginPath();
      ctx.moveTo(ax, ay);
      ctx.lineTo(bx - f.ux * flowHead(f, s) * 0.7, by - f.uy * flowHead(f, s) * 0.7);
      ctx.strokeStyle = LEVEL_STROKE[f.level];
      ctx.lineWidth = FLOW_WIDTH[f.wc] / s;
      ctx.stroke();
      ctx.beginPath();
      flowArrowPath(f, s);
      ctx.fillStyle = LEVEL_STROKE[f.level];
      ctx.fill();
    }
    ctx.lineCap = "round";
    ctx.globalAlpha = 1;
  }

  function flowArrowPath(f, s) {
    const [ax, ay, x, y] = flowEnds(f, s);
    const size = Math.min(flowHead(f, s), Math.hypot(x - ax, y - ay) * 0.6);
    const ux = f.ux, uy = f.uy, half = size * 0.55;
    ctx.moveTo(x, y);
    ctx.lineTo(x - ux * size - uy * half, y - uy * size + ux * half);
    ctx.lineTo(x - ux * size + uy * half, y - uy * size - ux * half);
    ctx.closePath();
  }

  function draw() {
    const t0 = performance.now();
    resize();
    const W = st.cssW, H = st.cssH, dpr = st.dpr;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#f8f9fa";
    ctx.fillRect(0, 0, W, H);
    const m = st.model;
    if (!m || !m.nodes.length) {
      ctx.fillStyle = "#6c757d";
      ctx.font = "15px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.fillText(
        m ? "No requests in the last " + windowEl.value + " — send some traffic." : st.lastError ? "" : "Loading…",
        W / 2,
        H / 2,
      );
      return finishDraw(t0);
    }
    const s = view.s;
    // Visible world rectangle, with a margin for labels and thick lines.
    const pad = 40 / s;
    const vx0 = -view.tx / s - pad, vy0 = -view.ty / s - pad;
    const vx1 = (W - view.tx) / s + pad, vy1 = (H - view.ty) / s + pad;
    const inView = (v) => v.x + v.r > vx0 && v.x - v.r < vx1 && v.y + v.r > vy0 && v.y - v.r < vy1;
    const edgeInView = (e) => e.maxX > vx0 && e.minX < vx1 && e.maxY > vy0 && e.minY < vy1;

    ctx.setTransform(dpr * s, 0, 0, dpr * s, dpr * view.tx, dpr * view.ty);
    // Namespace boxes.
    ctx.beginPath();
    for (const g of m.groups) {
      if (g.x + g.w > vx0 && g.x < vx1 && g.y + g.h > vy0 && g.y < vy1) ctx.rect(g.x, g.y, g.w, g.h);
    }
    ctx.fillStyle = "#ffffff";
    ctx.fill();
    ctx.lineWidth = 1 / s;
    ctx.strokeStyle = "#ced4da";
    ctx.stroke();

    const focus = focusSet();
    const agg = aggregation(m);
    const arrows = s >= 0.45;
    const arrowSize = 7 / s;
    ctx.lineCap = "round";
    // Calls inside boxes always; calls between boxes unless flows replace them.
    let shownIntra = 0, shownInter = 0;
    for (const b of m.intraBuckets) for (const e of b) if (edgeInView(e)) shownIntra++;
    if (agg < 1) for (const b of m.interBuckets) for (const e of b) if (edgeInView(e)) shownInter++;
    // Dense maps get fainter lines so nodes and the emphasised calls stay readable; calls
    // with errors get less of the fading, and are drawn last, on top.
    const base = Math.max(0.2, Math.min(0.75, 0.75 * Math.sqrt(600 / Math.max(1, shownIntra + shownInter))));
    const intraAlpha = focus ? Math.min(0.12, base) : agg > 0 ? base * (1 - 0.45 * agg) : base;
    const interAlpha = (focus ? Math.min(0.12, base) : base) * (1 - agg);
    const strokeBuckets = (buckets, alpha, from, to) => {
      if (!(alpha > 0.005)) return;
      for (let b = from * 4; b < to * 4; b++) {
        const bucket = buckets[b];
        if (!bucket.length) continue;
        let any = false;
        ctx.beginPath();
        for (const e of bucket) if (edgeInView(e)) (edgePath(e), (any = true));
        if (!any) continue;
        ctx.globalAlpha = Math.min(focus ? 0.3 : 0.9, alpha * LEVEL_EMPHASIS[b >> 2]);
        ctx.strokeStyle = LEVEL_STROKE[b >> 2];
        ctx.lineWidth = WIDTHS[b & 3] / s;
        ctx.stroke();
      }
    };
    const fillArrows = (buckets, alpha, from, to) => {
      if (!arrows || !(alpha > 0.005)) return;
      for (let l = from; l < to; l++) {
        ctx.beginPath();
        for (let w = 0; w < 4; w++) for (const e of buckets[l * 4 + w]) if (edgeInView(e)) arrowPath(e, arrowSize);
        ctx.globalAlpha = Math.min(focus ? 0.3 : 0.9, alpha * LEVEL_EMPHASIS[l]);
        ctx.fillStyle = LEVEL_STROKE[l];
        ctx.fill();
      }
    };
    // Healthy and slow-failing calls, then the flows, then the failing calls on top.
    strokeBuckets(m.intraBuckets, intraAlpha, 0, 3);
    strokeBuckets(m.interBuckets, interAlpha, 0, 3);
    fillArrows(m.intraBuckets, intraAlpha, 0, 3);
    fillArrows(m.interBuckets, interAlpha, 0, 3);
    if (agg > 0) drawFlows(m, agg, focus, s, vx0, vy0, vx1, vy1);
    strokeBuckets(m.intraBuckets, intraAlpha, 3, 4);
    strokeBuckets(m.interBuckets, interAlpha, 3, 4);
    fillArrows(m.intraBuckets, intraAlpha, 3, 4);
    fillArrows(m.interBuckets, interAlpha, 3, 4);
    if (focus) {
      ctx.globalAlpha = 1;
      for (const e of focus.edges) {
        ctx.beginPath();
        edgePath(e);
        ctx.strokeStyle = LEVEL_STROKE[e.level];
        ctx.lineWidth = (WIDTHS[e.wc] + 1) / s;
        ctx.stroke();
        ctx.beginPath();
        arrowPath(e, Math.max(arrowSize * 1.2, 6 / s));
        ctx.fillStyle = LEVEL_STROKE[e.level];
        ctx.fill();
      }
      const sel = st.selected && st.selected.kind === "edge" && m.edgeById.get(st.selected.id);
      if (sel) {
        ctx.beginPath();
        edgePath(sel);
        ctx.strokeStyle = "#212529";
        ctx.lineWidth = (WIDTHS[sel.wc] + 3) / s;
        ctx.globalAlpha = 0.35;
        ctx.stroke();
        ctx.globalAlpha = 1;
      }
    }
    // Nodes: fill and outline batched per error level and style.
    ctx.globalAlpha = 1;
    const visible = [];
    for (const v of m.nodes) if (inView(v)) visible.push(v);
    const dimmed = focus ? 0.3 : 1;
    drawNodes(visible, focus ? (v) => !focus.nodes.has(v) : null, dimmed, s);
    if (focus) drawNodes(visible, (v) => focus.nodes.has(v), 1, s);
    // Selection, hover and search rings.
    ctx.globalAlpha = 1;
    const ring = (v, color, width, grow) => {
      ctx.beginPath();
      shapePath(v, grow / s);
      ctx.strokeStyle = color;
      ctx.lineWidth = width / s;
      ctx.stroke();
    };
    if (st.matches) for (const v of st.matches) if (inView(v)) ring(v, "#fab005", 4, 5);
    if (st.hover && st.hover.kind === "node") ring(st.hover.item, "#495057", 2, 3);
    const selNode = st.selected && st.selected.kind === "node" && m.byId.get(st.selected.id);
    if (selNode) ring(selNode, "#212529", 3, 4);

    // Text, in screen space.
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.textBaseline = "alphabetic";
    ctx.font = "600 12px system-ui, sans-serif";
    ctx.textAlign = "left";
    ctx.fillStyle = "#495057";
    for (const g of m.groups) {
      const sx = g.x * s + view.tx, sy = g.y * s + view.ty, sw = g.w * s;
      if (sw < 50 || sx > W || sy > H || sx + sw < 0 || sy + g.h * s < 0) continue;
      const label = g.label + " (" + g.members.length + ")";
      ctx.fillText(fitText(label, sw - 12), sx + 6, sy + Math.min(17, Math.max(12, HEAD * s * 0.7)));
    }
    ctx.font = "11px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.lineJoin = "round";
    ctx.lineWidth = 3;
    ctx.strokeStyle = "rgba(255,255,255,0.9)";
    ctx.fillStyle = "#212529";
    const allLabels = s * DY >= 24 && visible.length <= 2000;
    const labelled = allLabels ? visible : focus ? visible.filter((v) => focus.nodes.has(v)) : [];
    const maxLabel = Math.max(40, DX * s - 10);
    for (const v of labelled) {
      const text = fitText(v.name, maxLabel);
      const x = v.x * s + view.tx, y = (v.y + radius(v)) * s + view.ty + 12;
      ctx.strokeText(text, x, y);
      ctx.fillText(text, x, y);
    }
    // The summary of a flow under the pointer or selected.
    if (aggregation(m) > 0) {
      ctx.font = "600 11px system-ui, sans-serif";
      for (const f of pickedFlows()) {
        const [ax, ay, bx, by] = flowEnds(f, s);
        const x = ((ax + bx) / 2) * s + view.tx, y = ((ay + by) / 2) * s + view.ty - 8;
        const text = f.src.label + " → " + f.dst.label + ": " + flowSummary(f);
        ctx.strokeText(text, x, y);
        ctx.fillStyle = f.level >= 2 ? LEVEL_STROKE[f.level] : "#212529";
        ctx.fillText(text, x, y);
      }
    }
    // Numbers on the emphasised edges once they are long enough to carry them.
    const aggNow = aggregation(m) > 0;
    if (focus && focus.edges.size <= (aggNow ? 16 : 200) && !(aggNow && pickedFlows().length)) {
      ctx.font = "10px system-ui, sans-serif";
      for (const e of focus.edges) {
        const len = Math.hypot(e.bx - e.ax, e.by - e.ay) * s;
        if (len < 110 && !e.self) continue;
        const x = ((e.ax + e.bx) / 2) * s + view.tx, y = ((e.ay + e.by) / 2) * s + view.ty - 4;
        const text = edgeSummary(e);
        ctx.strokeText(text, x, y);
        ctx.fillStyle = e.level >= 2 ? LEVEL_STROKE[e.level] : "#343a40";
        ctx.fillText(text, x, y);
      }
    }
    return finishDraw(t0);
  }

  function drawNodes(list, filter, alpha, s) {
    ctx.globalAlpha = alpha;
    for (let level = 0; level < 4; level++) {
      for (const style of ["solid", "dashed", "user"]) {
        ctx.beginPath();
        let any = false;
        for (const v of list) {
          if (v.level !== level || (filter && !filter(v))) continue;
          const vs = v.kind === "user" ? "user" : v.kind === "virtual" ? "dashed" : "solid";
          if (vs !== style) continue;
          shapePath(v, 0);
          any = true;
        }
        if (!any) continue;
        ctx.fillStyle = style === "user" ? "#343a40" : style === "dashed" ? "#ffffff" : LEVEL_FILL[level];
        ctx.fill();
        ctx.strokeStyle = LEVEL_STROKE[level];
        ctx.lineWidth = 2.5 / Math.max(s, 0.35);
        if (style === "dashed") ctx.setLineDash([3 / Math.max(s, 0.35), 2 / Math.max(s, 0.35)]);
        ctx.stroke();
        ctx.setLineDash([]);
      }
    }
  }

  const textCache = new Map();
  function fitText(text, maxWidth) {
    const key = ctx.font + "|" + maxWidth + "|" + text;
    let t = textCache.get(key);
    if (t !== undefined) return t;
    t = text;
    if (ctx.measureText(t).width > maxWidth) {
      let lo = 0, hi = text.length;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (ctx.measureText(text.slice(0, mid) + "…").width <= maxWidth) lo = mid;
        else hi = mid - 1;
      }
      t = text.slice(0, lo) + "…";
    }
    if (textCache.size > 20000) textCache.clear();
    textCache.set(key, t);
    return t;
  }

  function edgeSummary(e) {
    const lat = p95(e.server) != null ? p95(e.server) : p95(e.client);
    return fmtRate(e.rps) + " · " + fmtPct(e.err) + (lat != null ? " · p95 " + fmtSeconds(lat) : "");
  }

  function groupPhrase(g) {
    return g.key === NO_NAMESPACE ? "services without a namespace" : "namespace " + g.label;
  }

  function flowSummary(f) {
    const calls = f.edges.length;
    return calls + (calls === 1 ? " call · " : " calls · ") + fmtRate(f.rps) + " · errors " + fmtPct(f.err);
  }

  function finishDraw(t0) {
    const ms = performance.now() - t0;
    st.renders++;
    st.lastDrawMs = ms;
    return ms;
  }

  function scheduleDraw() {
    if (st.frame) return;
    st.frame = requestAnimationFrame(() => {
      st.frame = 0;
      draw();
    });
  }

  // ---- Hit testing ------------------------------------------------------------------------

  /** What a click at canvas point (sx, sy) in CSS px hits: nodes first, then edges. */
  function hitTest(sx, sy) {
    const m = st.model;
    if (!m || !m.grid) return null;
    const s = view.s;
    const wx = (sx - view.tx) / s, wy = (sy - view.ty) / s;
    const tol = 4 / s;
    const { size, cells, maxR } = m.grid;
    const reach = Math.max(maxR, 2.5 / s) * 1.2 + tol;
    let best = null, bestD = Infinity;
    for (let cx = Math.floor((wx - reach) / size); cx <= Math.floor((wx + reach) / size); cx++) {
      for (let cy = Math.floor((wy - reach) / size); cy <= Math.floor((wy + reach) / size); cy++) {
        const c = cells.get(cx + "," + cy);
        if (!c) continue;
        for (const v of c) {
          const d = Math.hypot(v.x - wx, v.y - wy);
          if (d <= radius(v) * 1.15 + tol && d < bestD) (best = v), (bestD = d);
        }
      }
    }
    if (best) return { kind: "node", item: best };
    // What is drawn on top wins: with flows shown, the selection's own calls, then the
    // flows, then the calls inside boxes; else every call.
    const tie = 0.75 / s;
    const nearestEdge = (edges, skipInter) => {
      let bestE = null, bestD = Infinity, bestOff = Infinity;
      for (const e of edges) {
        if (skipInter && e.flow) continue;
        const lim = (WIDTHS[e.wc] / 2 + 4) / s;
        if (wx < e.minX - lim || wx > e.maxX + lim || wy < e.minY - lim || wy > e.maxY + lim) continue;
        const d = e.self ? Math.abs(Math.hypot(wx - e.cx, wy - e.cy) - e.loop) : segDist(wx, wy, e.ax, e.ay, e.bx, e.by);
        if (d > lim) continue;
        // Calls on one line (a call skipping a row runs over its neighbours, boxes share
        // columns): the one whose middle is nearest wins, so each keeps a stretch of its own.
        const off = e.self ? 0 : Math.abs(segT - 0.5) * Math.hypot(e.bx - e.ax, e.by - e.ay);
        if (d < bestD - tie || (d <= bestD + tie && off < bestOff)) (bestE = e), (bestD = d), (bestOff = off);
      }
      return bestE ? { kind: "edge", item: bestE } : null;
    };
    if (aggregation(m) < 0.5) return nearestEdge(m.edges, false);
    const mine = selectedEdges();
    const own = mine && nearestEdge(mine, false);
    if (own) return own;
    let bestF = null;
    bestD = Infinity;
    for (const f of m.flows) {
      const lim = (FLOW_WIDTH[f.wc] / 2 + 3) / s;
      if (wx < f.minX - 2 * lim || wx > f.maxX + 2 * lim || wy < f.minY - 2 * lim || wy > f.maxY + 2 * lim) continue;
      const [ax, ay, bx, by] = flowEnds(f, s);
      const d = segDist(wx, wy, ax, ay, bx, by);
      if (d <= lim && d < bestD) (bestF = f), (bestD = d);
    }
    if (bestF) return { kind: "namespaces", item: bestF };
    return nearestEdge(m.edges, true);
  }

  /** The calls the selection draws on top (a node's, an edge, a flow's members), or null. */
  function selectedEdges() {
    const sel = st.selected && itemOf(st.selected.kind, st.selected.id);
    if (!sel) return null;
    if (sel.kind === "node") return sel.item.inc.concat(sel.item.out);
    if (sel.kind === "edge") return [sel.item];
    return sel.item.edges;
  }

  /** Where along the segment the last `segDist` found the nearest point (0..1). */
  let segT = 0;

  /** Distance from (px, py) to the segment (ax, ay)-(bx, by); sets `segT`. */
  function segDist(px, py, ax, ay, bx, by) {
    const dx = bx - ax, dy = by - ay;
    const l2 = dx * dx + dy * dy;
    let t = l2 ? ((px - ax) * dx + (py - ay) * dy) / l2 : 0;
    t = Math.max(0, Math.min(1, t));
    segT = t;
    return Math.hypot(px - (ax + t * dx), py - (ay + t * dy));
  }

  /** The part of the canvas (CSS px, canvas coordinates) not covered by the details panel. */
  function freeArea() {
    const area = { x0: 8, y0: 8, x1: st.cssW - 8, y1: st.cssH - 8 };
    if (!detailsEl.hidden) {
      const c = canvas.getBoundingClientRect(), d = detailsEl.getBoundingClientRect();
      if (d.width && d.left > c.left + 40) area.x1 = Math.min(area.x1, d.left - c.left - 8);
      else if (d.height && d.top > c.top + 40) area.y1 = Math.min(area.y1, d.top - c.top - 8);
    }
    return area;
  }

  function centreOn(wx, wy, scale) {
    const a = freeArea();
    if (scale) view.s = scale;
    view.tx = (a.x0 + a.x1) / 2 - wx * view.s;
    view.ty = (a.y0 + a.y1) / 2 - wy * view.s;
  }

  /**
   * Viewport CSS px where a click hits the node or edge `id`; pans and zooms the view first
   * if the item is off screen, under the details panel or covered by something else.
   */
  function screenPosition(kind, id) {
    const found = itemOf(kind, id);
    if (!found) return null;
    const item = found.item;
    const along = (t) => {
      const [ax, ay, bx, by] = kind === "namespaces" ? flowEnds(item, view.s) : [item.ax, item.ay, item.bx, item.by];
      return [ax + (bx - ax) * t, ay + (by - ay) * t];
    };
    // Candidate points: a node's centre; along a line, every few pixels of the part on
    // screen, nearest its middle first.
    const points = () => {
      if (kind === "node") return [[item.x, item.y]];
      if (item.self) return [[item.cx, item.cy - item.loop]];
      const a = freeArea();
      const [ax, ay] = along(0), [bx, by] = along(1);
      const px = ax * view.s + view.tx, py = ay * view.s + view.ty;
      const dx = (bx - ax) * view.s, dy = (by - ay) * view.s;
      let t0 = 0, t1 = 1;
      for (const [p, d, lo, hi] of [[px, dx, a.x0 + 2, a.x1 - 2], [py, dy, a.y0 + 2, a.y1 - 2]]) {
        if (Math.abs(d) < 1e-9) {
          if (p < lo || p > hi) return [];
          continue;
        }
        const u = (lo - p) / d, v = (hi - p) / d;
        t0 = Math.max(t0, Math.min(u, v));
        t1 = Math.min(t1, Math.max(u, v));
      }
      if (t1 < t0) return [];
      const n = Math.max(1, Math.min(80, Math.ceil((Math.hypot(dx, dy) * (t1 - t0)) / 6)));
      const ts = [];
      for (let i = 0; i < n; i++) ts.push(t0 + ((t1 - t0) * (i + 0.5)) / n);
      ts.sort((p, q) => Math.abs(p - 0.5) - Math.abs(q - 0.5));
      return ts.map(along);
    };
    // Where to look next for a call covered by others: its middle, then stretches nearer
    // its ends, zooming in every third try.
    const looks = [0.5, 0.3, 0.7, 0.5, 0.2, 0.8, 0.5, 0.12, 0.88, 0.5, 0.4, 0.6];
    const zoomFrom = Math.max(view.s, 0.6);
    // Whole pixels (browsers may truncate a click's coordinates), and only where the
    // neighbouring pixels hit the same item too.
    const hits = (sx, sy) => {
      for (const [dx, dy] of [[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]]) {
        const hit = hitTest(sx + dx, sy + dy);
        if (!hit || hit.item !== item) return false;
      }
      return true;
    };
    for (let attempt = 0; attempt <= looks.length; attempt++) {
      const a = freeArea();
      const r = canvas.getBoundingClientRect();
      for (const [wx, wy] of points()) {
        const x = Math.round(r.left + wx * view.s + view.tx), y = Math.round(r.top + wy * view.s + view.ty);
        const sx = x - r.left, sy = y - r.top;
        if (sx < a.x0 || sx > a.x1 || sy < a.y0 || sy > a.y1) continue;
        if (hits(sx, sy)) return { x, y };
      }
      if (attempt === looks.length) break;
      // Flows show only zoomed out; calls between boxes only zoomed in past the flows.
      if (kind === "namespaces") centreOn(...along(0.5), Math.min(view.s, AGG_FULL * 0.9) / (attempt ? 1.5 : 1));
      else if (kind === "node" || item.self) centreOn(...points()[0], attempt === 0 ? zoomFrom : Math.min(view.s * 2, 16));
      else centreOn(...along(looks[attempt]), Math.min(zoomFrom * 2 ** Math.floor(attempt / 3), 16));
      draw();
    }
    return null;
  }

  // ---- Details panel ----------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) for (const [k, v] of Object.entries(attrs)) {
      if (k === "onclick") e.addEventListener("click", v);
      else if (k === "style") e.style.cssText = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c != null) e.append(c);
    return e;
  }

  function levelSpan(requests, rate) {
    return el("span", { class: LEVEL_CLASS[errorLevel(requests, rate)] }, fmtPct(rate));
  }

  function dlOf(rows) {
    const dl = el("dl");
    for (const [k, v] of rows) dl.append(el("dt", null, k), el("dd", null, v));
    return dl;
  }

  function latencyTable(rows) {
    const t = el("table", null, el("tr", null, el("th", null, ""), el("th", null, "p50"), el("th", null, "p95"), el("th", null, "p99")));
    for (const [label, lat] of rows) {
      t.append(
        el("tr", null, el("td", null, label),
          el("td", null, fmtSeconds(lat && lat.p50)),
          el("td", null, fmtSeconds(lat && lat.p95)),
          el("td", null, fmtSeconds(lat && lat.p99))),
      );
    }
    return t;
  }

  function exemplarList(list) {
    if (!list.length) return el("p", { class: "note" }, "No exemplar traces in this window.");
    const ul = el("ul");
    for (const x of list) {
      if (!x || typeof x.trace_id !== "string") continue;
      const meta = el("span", { class: "exemplar-meta" });
      if (typeof x.duration_seconds === "number") meta.append(fmtSeconds(x.duration_seconds));
      if (x.failed) meta.append(" · ", el("span", { class: "failed" }, "failed"));
      if (x.timestamp) {
        const d = new Date(x.timestamp);
        if (!isNaN(d)) meta.append(" · " + clockTime(d));
      }
      if (x.span_id) meta.append(" · span " + x.span_id);
      const id = el("span", { class: "exemplar", title: "Trace id (click to copy)" }, x.trace_id);
      id.addEventListener("click", () => copy(x.trace_id, meta));
      ul.append(el("li", null, id, meta));
    }
    return ul;
  }

  function copy(text, where) {
    if (!navigator.clipboard || !navigator.clipboard.writeText) return;
    navigator.clipboard.writeText(text).then(
      () => {
        const tag = el("span", null, " · copied");
        where.append(tag);
        setTimeout(() => tag.remove(), 1500);
      },
      () => {},
    );
  }

  function peerList(edges, otherEnd, title) {
    const box = el("div");
    box.append(el("h3", null, title + " (" + edges.length + ")"));
    if (!edges.length) {
      box.append(el("p", { class: "note" }, "none"));
      return box;
    }
    const top = edges.slice().sort((a, b) => b.rps - a.rps || b.requests - a.requests).slice(0, 10);
    const ul = el("ul");
    for (const e of top) {
      const peer = otherEnd(e);
      ul.append(
        el("li", { class: "peer", title: e.id, onclick: () => select({ kind: "edge", id: e.id }, true) },
          el("span", { class: "dot", style: "background:" + LEVEL_STROKE[e.level] }),
          el("span", { class: "peer-name" }, peer.name),
          el("span", { class: "num" }, fmtRate(e.rps) + " · " + fmtPct(e.err))),
      );
    }
    box.append(ul);
    if (edges.length > top.length) box.append(el("p", { class: "note" }, "and " + (edges.length - top.length) + " more"));
    return box;
  }

  function renderDetails() {
    const sel = st.selected && itemOf(st.selected.kind, st.selected.id);
    detailsEl.replaceChildren();
    delete detailsEl.dataset.exemplars;
    if (!sel) {
      detailsEl.hidden = true;
      return;
    }
    detailsEl.hidden = false;
    const close = el("button", { class: "close", type: "button", title: "Close (Esc)", "aria-label": "Close" }, "×");
    close.addEventListener("click", () => select(null));
    const win = windowEl.value;
    if (sel.kind === "node") {
      const v = sel.item;
      detailsEl.append(
        close,
        el("h2", null, v.name),
        el("div", { class: "subtitle" }, (v.ns ? "namespace " + v.ns + " · " : "") + KIND_LABEL[v.kind]),
        dlOf([
          ["requests/s", fmtRate(v.rps).replace("/s", " req/s")],
          ["requests", fmtCount(v.requests) + " in " + win],
          ["error rate", levelSpan(v.requests, v.err)],
          ["failed", fmtCount(v.failed)],
        ]),
        el("h3", null, v.kind === "virtual" || v.kind === "database" || v.kind === "messaging" ? "Latency (seen by callers)" : "Latency"),
        latencyTable([["served", v.lat]]),
        peerList(v.inc, (e) => e.s, "Callers"),
        peerList(v.out, (e) => e.t, "Calls"),
        el("h3", null, "Exemplar traces"),
        exemplarSection(["node:" + v.id], [v.id], (lists) => lists[0]),
      );
    } else if (sel.kind === "namespaces") {
      const f = sel.item;
      const calls = f.edges.slice().sort((a, b) => b.level - a.level || b.rps - a.rps || cmpStr(a.id, b.id));
      const slowest = f.edges.reduce((m, e) => Math.max(m, p95(e.server) ?? p95(e.client) ?? 0), 0);
      const back = f.reverse;
      // Exemplars of the busiest and most failing member calls, fetched with their sources.
      const sampled = calls.slice(0, EXEMPLAR_FLOW_CALLS);
      const mergeExemplars = (lists) => {
        const all = [].concat(...lists);
        all.sort((a, b) => (b.failed === true) - (a.failed === true) || num(b.duration_seconds) - num(a.duration_seconds));
        const seen = new Set();
        return all.filter((x) => !seen.has(x.trace_id) && seen.add(x.trace_id)).slice(0, 5);
      };
      const list = el("ul");
      for (const e of calls.slice(0, 15)) {
        list.append(
          el("li", { class: "peer", title: e.id, onclick: () => select({ kind: "edge", id: e.id }, true) },
            el("span", { class: "dot", style: "background:" + LEVEL_STROKE[e.level] }),
            el("span", { class: "peer-name" }, e.s.name + " → " + e.t.name),
            el("span", { class: "num" }, fmtRate(e.rps) + " · " + fmtPct(e.err))),
        );
      }
      detailsEl.append(
        close,
        el("h2", null, f.src.label + " → " + f.dst.label),
        el("div", { class: "subtitle" }, "calls from " + groupPhrase(f.src) + " to " + groupPhrase(f.dst)),
        dlOf([
          ["calls", String(f.edges.length)],
          ["requests/s", fmtRate(f.rps).replace("/s", " req/s")],
          ["requests", fmtCount(f.requests) + " in " + win],
          ["error rate", levelSpan(f.requests, f.err)],
          ["failed", fmtCount(f.failed)],
          ["slowest p95", fmtSeconds(slowest || null)],
        ]),
        ...[
          back && el("p", { class: "note peer", onclick: () => select({ kind: "namespaces", id: back.id }, true) },
            "back: " + flowSummary(back)),
          el("h3", null, "Calls (" + f.edges.length + ")"),
          list,
          calls.length > 15 && el("p", { class: "note" }, "and " + (calls.length - 15) + " more; zoom in to see them all"),
          el("h3", null, "Exemplar traces"),
          exemplarSection(sampled.map((e) => "edge:" + e.id), sampled.map((e) => e.s.id), mergeExemplars),
        ].filter(Boolean),
      );
    } else {
      const e = sel.item;
      const lat = e.server || e.client;
      detailsEl.append(
        close,
        el("h2", null, e.s.name + " → " + e.t.name),
        el("div", { class: "subtitle" }, CONNECTION_LABEL[e.conn] || e.conn),
        dlOf([
          ["requests/s", fmtRate(e.rps).replace("/s", " req/s")],
          ["requests", fmtCount(e.requests) + " in " + win],
          ["error rate", levelSpan(e.requests, e.err)],
          ["failed", fmtCount(e.failed)],
          ["p50 / p95 / p99", fmtSeconds(lat && lat.p50) + " / " + fmtSeconds(lat && lat.p95) + " / " + fmtSeconds(lat && lat.p99)],
          ["connection type", e.conn === "" ? "direct (both sides traced)" : e.conn],
        ]),
        el("h3", null, "Latency"),
        latencyTable([["client", e.client], ["server", e.server], ["network", e.network]]),
        el("p", { class: "note" }, "client p95 " + fmtSeconds(p95(e.client)) + " · server p95 " + fmtSeconds(p95(e.server)) +
          " · network p95 " + fmtSeconds(p95(e.network))),
        el("h3", null, "Ends"),
        el("ul", null,
          el("li", { class: "peer", onclick: () => select({ kind: "node", id: e.s.id }, true) }, el("span", { class: "peer-name" }, "from " + e.s.id)),
          el("li", { class: "peer", onclick: () => select({ kind: "node", id: e.t.id }, true) }, el("span", { class: "peer-name" }, "to " + e.t.id))),
        el("h3", null, "Exemplar traces"),
        exemplarSection(["edge:" + e.id], [e.s.id], (lists) => lists[0]),
      );
    }
  }

  // ---- Exemplars, fetched for what is selected ----------------------------------------------
  // The map loads with `exemplars=false` (at 5,000 edges they are half of the answer); a
  // selection fetches the neighbourhood of the node concerned (`node=<id>`: the node, its
  // edges and their other ends) with them. Cached per load, since every load brings new numbers.

  const exemplarCache = new Map(); // "node:<id>" | "edge:<id>" -> exemplar list
  const exemplarFetches = new Map(); // node id -> Promise of its neighbourhood
  let exemplarGeneration = 0; // bumped by every load, so a late answer cannot fill a newer cache

  function fetchNeighbourhood(nodeId) {
    if (!exemplarFetches.has(nodeId)) {
      const generation = exemplarGeneration;
      const p = new URLSearchParams({ window: windowEl.value, node: nodeId });
      if (component) p.set("component", component);
      const load = fetch("api/v1/topology?" + p.toString(), { cache: "no-store", headers: { Accept: "application/json" } })
        .then(async (resp) => {
          const text = await resp.text();
          if (!resp.ok) {
            let why = "";
            try {
              why = JSON.parse(text).error || "";
            } catch (_) {
              why = text.slice(0, 300);
            }
            throw new Error("topology API answered " + resp.status + (why ? ": " + why : ""));
          }
          const json = JSON.parse(text);
          if (generation !== exemplarGeneration) return;
          for (const n of json.nodes || []) exemplarCache.set("node:" + n.id, Array.isArray(n.exemplars) ? n.exemplars : []);
          for (const e of json.edges || []) exemplarCache.set("edge:" + e.id, Array.isArray(e.exemplars) ? e.exemplars : []);
        });
      exemplarFetches.set(nodeId, load);
      load.catch(() => exemplarFetches.delete(nodeId));
    }
    return exemplarFetches.get(nodeId);
  }

  /** Forgets fetched exemplars (a new load brings new numbers). */
  function forgetExemplars() {
    exemplarGeneration++;
    exemplarCache.clear();
    exemplarFetches.clear();
  }

  /**
   * The exemplar list of `keys` ("node:<id>" / "edge:<id>"), shown at once when known, else
   * after fetching the neighbourhoods of `nodeIds`; `combine` turns the lists of `keys` into
   * one. `#details` carries `data-exemplars` = loading | loaded | failed meanwhile.
   */
  function exemplarSection(keys, nodeIds, combine) {
    const box = el("div", { class: "exemplars" });
    const fill = () => {
      box.replaceChildren(exemplarList(combine(keys.map((k) => exemplarCache.get(k) || []))));
      detailsEl.dataset.exemplars = "loaded";
    };
    if (keys.every((k) => exemplarCache.has(k))) {
      fill();
      return box;
    }
    box.append(el("p", { class: "note" }, "Loading exemplar traces…"));
    detailsEl.dataset.exemplars = "loading";
    Promise.all([...new Set(nodeIds)].map(fetchNeighbourhood)).then(
      () => {
        if (box.isConnected) fill();
      },
      (e) => {
        if (!box.isConnected) return;
        box.replaceChildren(el("p", { class: "note" }, "Cannot load exemplar traces: " + (e && e.message ? e.message : e)));
        detailsEl.dataset.exemplars = "failed";
      },
    );
    return box;
  }

  /** Selects a node or edge (or nothing); `reveal` pans it into view. */
  function select(sel, reveal) {
    st.selected = sel && itemOf(sel.kind, sel.id) ? { kind: sel.kind, id: sel.id } : null;
    renderDetails();
    if (reveal && st.selected) {
      const { item } = itemOf(st.selected.kind, st.selected.id);
      const [x, y] = st.selected.kind === "node" ? [item.x, item.y] : [(item.ax + item.bx) / 2, (item.ay + item.by) / 2];
      const sx = x * view.s + view.tx, sy = y * view.s + view.ty, a = freeArea();
      if (sx < a.x0 || sx > a.x1 || sy < a.y0 || sy > a.y1) centreOn(x, y);
    }
    draw();
  }

  // ---- Loading ----------------------------------------------------------------------------

  function topologyUrl() {
    const p = new URLSearchParams({ window: windowEl.value, exemplars: "false" });
    if (component) p.set("component", component);
    return "api/v1/topology?" + p.toString();
  }

  async function loadOnce() {
    const t0 = performance.now();
    const ctl = new AbortController();
    const timeout = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    let resp, text;
    try {
      resp = await fetch(topologyUrl(), { cache: "no-store", signal: ctl.signal, headers: { Accept: "application/json" } });
      text = await resp.text();
    } catch (e) {
      throw new Error(
        ctl.signal.aborted
          ? "the topology API did not answer within " + FETCH_TIMEOUT_MS / 1000 + " s"
          : "cannot reach the gateway's topology API (" + (e && e.message ? e.message : e) + ")",
      );
    } finally {
      clearTimeout(timeout);
    }
    const t1 = performance.now();
    if (!resp.ok) {
      let why = "";
      try {
        why = JSON.parse(text).error || "";
      } catch (_) {
        why = text.slice(0, 300);
      }
      throw new Error("topology API answered " + resp.status + (why ? ": " + why : " " + resp.statusText));
    }
    let json;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new Error("the topology API answered something that is not JSON (" + e.message + ")");
    }
    const model = buildModel(json);
    const t2 = performance.now();
    layoutModel(model, memory, layoutAspect());
    edgeGeometry(model);
    const t3 = performance.now();
    st.model = model;
    forgetExemplars();
    if (st.hover) st.hover = null;
    if (st.selected && !itemOf(st.selected.kind, st.selected.id)) st.selected = null;
    if (searchEl.value.trim()) st.matches = matchesOf(searchEl.value);
    resize();
    if (!st.fitted && model.nodes.length && st.cssW) {
      fit();
      st.fitted = true;
    }
    const drawMs = draw();
    const t4 = performance.now();
    renderDetails();
    updateNames(model);
    st.lastLoad = {
      fetchMs: t1 - t0,
      parseMs: t2 - t1,
      layoutMs: t3 - t2,
      drawMs,
      totalMs: t4 - t0,
      nodes: model.nodes.length,
      edges: model.edges.length,
    };
    st.loads++;
    st.ready = true;
    st.lastError = null;
    bannerEl.hidden = true;
    statusEl.textContent =
      model.nodes.length + " services · " + model.edges.length + " edges · updated " + clockTime(new Date());
    statusEl.title = "layout " + Math.round(t3 - t2) + " ms, draw " + Math.round(drawMs) + " ms";
  }

  function showError(e) {
    const msg = e && e.message ? e.message : String(e);
    st.lastError = msg;
    bannerEl.textContent = msg + (st.model ? " — showing the last good map." : "");
    bannerEl.hidden = false;
    if (!st.model) {
      statusEl.textContent = "no data";
      draw();
    }
  }

  /** Loads now (after any load under way); resolves once drawn, rejects with the error shown. */
  function reload() {
    clearTimeout(st.timer);
    const run = st.chain.then(loadOnce);
    st.chain = run.then(
      () => scheduleRefresh(),
      (e) => {
        showError(e);
        scheduleRefresh();
      },
    );
    return run;
  }

  function scheduleRefresh() {
    clearTimeout(st.timer);
    const secs = Number(refreshEl.value);
    if (!(secs > 0)) return;
    st.timer = setTimeout(() => {
      if (document.hidden) {
        st.missedRefresh = true;
        return;
      }
      reload().catch(() => {});
    }, secs * 1000);
  }

  // ---- Search -----------------------------------------------------------------------------

  function updateNames(model) {
    const list = $("service-names");
    const names = Array.from(new Set(model.nodes.map((v) => v.name))).sort();
    if (list.dataset.names === names.join("\n")) return;
    list.dataset.names = names.join("\n");
    list.replaceChildren(...names.slice(0, 5000).map((n) => el("option", { value: n })));
  }

  function matchesOf(text) {
    const q = text.trim().toLowerCase();
    if (!q || !st.model) return null;
    const found = new Set();
    for (const v of st.model.nodes) if (v.lname.includes(q) || v.lid.includes(q)) found.add(v);
    return found;
  }

  function bestMatch(text) {
    const q = text.trim().toLowerCase();
    const m = st.matches;
    if (!q || !m || !m.size) return null;
    let best = null, rank = 9;
    for (const v of m) {
      const r = v.lname === q || v.lid === q ? 0 : v.lname.startsWith(q) ? 1 : 2;
      if (r < rank || (r === rank && (v.rps > best.rps || (v.rps === best.rps && v.id < best.id)))) (best = v), (rank = r);
    }
    return best;
  }

  function onSearchInput() {
    st.matches = matchesOf(searchEl.value);
    searchEl.classList.toggle("nomatch", !!st.matches && st.matches.size === 0);
    if (st.matches && st.matches.size === 0) st.matches = null;
    const v = bestMatch(searchEl.value);
    // A full name picked from the list or typed: go there at once.
    if (v && v.lname === searchEl.value.trim().toLowerCase()) goTo(v);
    else scheduleDraw();
  }

  function goTo(v) {
    centreOn(v.x, v.y, Math.max(view.s, 1));
    select({ kind: "node", id: v.id }, false);
  }

  // ---- Input ------------------------------------------------------------------------------

  const drag = { on: false, moved: false, swallowClick: false, x: 0, y: 0, id: -1 };

  function local(ev) {
    const r = canvas.getBoundingClientRect();
    return [ev.clientX - r.left, ev.clientY - r.top];
  }

  mapEl.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0 || ev.target !== canvas) return;
    drag.on = true;
    drag.moved = false;
    drag.x = ev.clientX;
    drag.y = ev.clientY;
    drag.id = ev.pointerId;
    mapEl.focus({ preventScroll: true });
  });
  window.addEventListener("pointermove", (ev) => {
    if (drag.on && ev.pointerId === drag.id) {
      const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
      if (!drag.moved && Math.hypot(dx, dy) < 4) return;
      if (!drag.moved) {
        drag.moved = true;
        mapEl.classList.add("dragging");
        if (canvas.setPointerCapture) try { canvas.setPointerCapture(ev.pointerId); } catch (_) { /* gone */ }
      }
      view.tx += dx;
      view.ty += dy;
      drag.x = ev.clientX;
      drag.y = ev.clientY;
      tooltipEl.hidden = true;
      scheduleDraw();
      return;
    }
    if (ev.target !== canvas) return;
    hoverAt(ev);
  });
  window.addEventListener("pointerup", (ev) => {
    if (!drag.on || ev.pointerId !== drag.id) return;
    drag.on = false;
    mapEl.classList.remove("dragging");
    // The click that follows a drag must not select what the pointer ended on.
    drag.swallowClick = drag.moved;
  });
  canvas.addEventListener("click", (ev) => {
    if (drag.swallowClick) {
      drag.swallowClick = false;
      return;
    }
    const [sx, sy] = local(ev);
    const hit = hitTest(sx, sy);
    select(hit ? { kind: hit.kind, id: hit.item.id } : null, false);
  });
  window.addEventListener("pointercancel", () => {
    drag.on = false;
    mapEl.classList.remove("dragging");
  });
  canvas.addEventListener("pointerleave", () => {
    if (st.hover) {
      st.hover = null;
      scheduleDraw();
    }
    tooltipEl.hidden = true;
    mapEl.classList.remove("pointing");
  });

  function hoverAt(ev) {
    const [sx, sy] = local(ev);
    const hit = hitTest(sx, sy);
    const same = (hit && st.hover && hit.item === st.hover.item) || (!hit && !st.hover);
    if (!same) {
      st.hover = hit;
      scheduleDraw();
    }
    mapEl.classList.toggle("pointing", !!hit);
    if (!hit) {
      tooltipEl.hidden = true;
      return;
    }
    const it = hit.item;
    if (hit.kind === "node") {
      tooltipEl.textContent = it.name + (it.ns ? "  (" + it.ns + ")" : "") + "\n" + fmtRate(it.rps) + " · errors " + fmtPct(it.err) +
        (p95(it.lat) != null ? " · p95 " + fmtSeconds(p95(it.lat)) : "");
    } else if (hit.kind === "namespaces") {
      tooltipEl.textContent = it.src.label + " → " + it.dst.label + "\n" + flowSummary(it) + "\nclick for the calls";
    } else {
      tooltipEl.textContent = it.s.name + " → " + it.t.name + "\n" + edgeSummary(it);
    }
    tooltipEl.style.whiteSpace = "pre";
    tooltipEl.hidden = false;
    const w = tooltipEl.offsetWidth, h = tooltipEl.offsetHeight;
    tooltipEl.style.left = Math.min(sx + 14, st.cssW - w - 4) + "px";
    tooltipEl.style.top = (sy + 16 + h > st.cssH ? sy - h - 10 : sy + 16) + "px";
  }

  mapEl.addEventListener(
    "wheel",
    (ev) => {
      ev.preventDefault();
      const [sx, sy] = local(ev);
      const unit = ev.deltaMode === 1 ? 16 : ev.deltaMode === 2 ? 400 : 1;
      const k = Math.exp(-ev.deltaY * unit * 0.0015);
      const s = Math.max(0.01, Math.min(20, view.s * k));
      view.tx = sx - ((sx - view.tx) * s) / view.s;
      view.ty = sy - ((sy - view.ty) * s) / view.s;
      view.s = s;
      tooltipEl.hidden = true;
      // What is under the pointer changes with the zoom (flows give way to calls).
      if (st.hover) st.hover = hitTest(sx, sy);
      scheduleDraw();
    },
    { passive: false },
  );

  mapEl.addEventListener("keydown", (ev) => {
    const step = 60;
    const keys = {
      f: () => fit(),
      "+": () => zoomBy(1.25),
      "=": () => zoomBy(1.25),
      "-": () => zoomBy(0.8),
      ArrowLeft: () => (view.tx += step),
      ArrowRight: () => (view.tx -= step),
      ArrowUp: () => (view.ty += step),
      ArrowDown: () => (view.ty -= step),
    };
    if (keys[ev.key]) {
      ev.preventDefault();
      keys[ev.key]();
      scheduleDraw();
    }
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && st.selected) select(null);
  });

  function zoomBy(k) {
    const cx = st.cssW / 2, cy = st.cssH / 2;
    const s = Math.max(0.01, Math.min(20, view.s * k));
    view.tx = cx - ((cx - view.tx) * s) / view.s;
    view.ty = cy - ((cy - view.ty) * s) / view.s;
    view.s = s;
  }

  windowEl.addEventListener("change", () => {
    syncUrl();
    reload().catch(() => {});
  });
  refreshEl.addEventListener("change", () => {
    syncUrl();
    scheduleRefresh();
  });
  searchEl.addEventListener("input", onSearchInput);
  searchEl.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter") return;
    st.matches = matchesOf(searchEl.value);
    const v = bestMatch(searchEl.value);
    searchEl.classList.toggle("nomatch", !!searchEl.value.trim() && !v);
    if (v) goTo(v);
  });
  $("fit").addEventListener("click", () => {
    fit();
    draw();
  });
  $("relayout").addEventListener("click", () => {
    memory.clear();
    if (!st.model) return;
    layoutModel(st.model, memory, layoutAspect());
    edgeGeometry(st.model);
    fit();
    draw();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && st.missedRefresh) {
      st.missedRefresh = false;
      reload().catch(() => {});
    }
  });
  if (typeof ResizeObserver === "function") {
    new ResizeObserver(() => {
      if (resize()) draw();
    }).observe(mapEl);
  } else {
    window.addEventListener("resize", () => resize() && draw());
  }

  // ---- The page's API (tests and benchmarks drive it) -------------------------------------

  window.meshgateServiceMap = {
    get ready() {
      return st.ready;
    },
    get renders() {
      return st.renders;
    },
    get loads() {
      return st.loads;
    },
    get lastLoad() {
      return st.lastLoad;
    },
    get lastDrawMs() {
      return st.lastDrawMs;
    },
    get selected() {
      return st.selected ? { kind: st.selected.kind, id: st.selected.id } : null;
    },
    /** The message in the error banner, or null when the last load worked. */
    get lastError() {
      return st.lastError;
    },
    nodeIds: () => (st.model ? st.model.nodes.map((v) => v.id) : []),
    edgeIds: () => (st.model ? st.model.edges.map((e) => e.id) : []),
    screenPosition,
    reload,
    redraw: () => draw(),
    /** Selects a node or edge as a click would (`null` clears). */
    select: (kind, id) => select(kind ? { kind, id } : null, true),
    /** Fits the whole map on screen. */
    fit: () => {
      fit();
      return draw();
    },
  };

  syncUrl();
  resize();
  draw();
  reload().catch(() => {});
})();
