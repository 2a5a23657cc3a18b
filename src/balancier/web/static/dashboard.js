/* balancier dashboard: progressive enhancement of the server-rendered page.
   Rules: the page is complete without this file. With it, (1) the sections are replaced every second by the
   HTML the server sends on /events (server-sent events), except a section the user is typing in;
   (2) two small SVG charts (requests/s and response time per backend) are drawn from the same events;
   (3) an action form first shows the planned transition (POST /dashboard/plan) in a dialog, then posts
   the change (POST /dashboard/do); both carry the CSRF token in the X-CSRF-Token header.
   URLs are built on location.origin: a page opened as http://user:pass@host/ must not put credentials
   into fetch() or EventSource URLs (browsers refuse them). */
(function () {
  "use strict";
  var token = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  var live = document.getElementById("live");
  var dirty = {};            // section id -> true while the user edits a form in it
  var pending = null;        // the form whose confirmation is open
  var series = {};           // backend -> [{t, rate, rtime}]
  var COLORS = ["#2f6fed", "#d9480f", "#2b8a3e", "#ae3ec9", "#e8590c", "#0c8599", "#c2255c", "#5f3dc4"];
  var KEEP = 60;

  function url(path) { return new URL(path, location.origin).toString(); }

  function sectionOf(el) {
    var s = el && el.closest ? el.closest('[id^="sec-"]') : null;
    return s ? s.id : null;
  }
  document.addEventListener("input", function (ev) { var s = sectionOf(ev.target); if (s) dirty[s] = true; });
  document.addEventListener("change", function (ev) { var s = sectionOf(ev.target); if (s) dirty[s] = true; });

  function replaceSections(sections) {
    var active = document.activeElement;  // only a field being typed in holds a section back, not a button
    var focused = active && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName) && active.type !== "hidden"
      ? sectionOf(active) : null;
    Object.keys(sections).forEach(function (name) {
      var el = document.getElementById("sec-" + name);
      if (!el || dirty[el.id] || focused === el.id) return;
      if (pending && el.contains(pending)) return;
      if (el.getAttribute("data-html") === sections[name]) return;
      el.innerHTML = sections[name];
      el.setAttribute("data-html", sections[name]);
    });
  }

  // ---- charts --------------------------------------------------------------------------------------
  var charts = document.getElementById("charts");
  var svgNS = "http://www.w3.org/2000/svg";
  var W = 600, H = 120;

  function makeChart(key, title, unit) {
    var box = document.createElement("figure");
    box.className = "chart";
    box.style.margin = "0";
    var h = document.createElement("h3");
    h.textContent = title;
    var svg = document.createElementNS(svgNS, "svg");
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", title);
    svg.id = "chart-" + key;
    var legend = document.createElement("figcaption");
    legend.className = "legend";
    box.appendChild(h); box.appendChild(svg); box.appendChild(legend);
    return {box: box, svg: svg, legend: legend, title: h, base: title, unit: unit, key: key};
  }
  var rateChart = makeChart("rate", "Requests per second, per backend", "req/s");
  var rtimeChart = makeChart("rtime", "Response time, per backend (average of the last requests)", "ms");
  var chartsReady = false;

  function draw(chart) {
    var svg = chart.svg, names = Object.keys(series).sort();
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    // the x axis ends at the newest sample's time (the server's clock), so a skewed browser clock does not matter
    var now = 0, max = 0;
    names.forEach(function (n) {
      series[n].forEach(function (p) { var v = p[chart.key]; if (v != null && v > max) max = v; if (p.t > now) now = p.t; });
    });
    var top = max > 0 ? max * 1.15 : 1;
    for (var i = 1; i < 4; i++) {
      var g = document.createElementNS(svgNS, "line");
      g.setAttribute("x1", 0); g.setAttribute("x2", W); g.setAttribute("y1", H * i / 4); g.setAttribute("y2", H * i / 4);
      g.setAttribute("class", "grid"); g.setAttribute("vector-effect", "non-scaling-stroke");
      svg.appendChild(g);
    }
    chart.legend.textContent = "";
    names.forEach(function (n, idx) {
      var color = COLORS[idx % COLORS.length];
      var pts = series[n].filter(function (p) { return p[chart.key] != null; }).map(function (p) {
        var x = W - (now - p.t) / KEEP * W, y = H - (p[chart.key] / top) * H;
        return x.toFixed(1) + "," + y.toFixed(1);
      });
      if (pts.length) {
        var line = document.createElementNS(svgNS, "polyline");
        line.setAttribute("points", pts.join(" "));
        line.setAttribute("fill", "none"); line.setAttribute("stroke", color); line.setAttribute("stroke-width", "2");
        line.setAttribute("vector-effect", "non-scaling-stroke"); line.setAttribute("stroke-linejoin", "round");
        svg.appendChild(line);
      }
      var last = series[n].length ? series[n][series[n].length - 1][chart.key] : null;
      var item = document.createElement("span");
      var sw = document.createElement("i");
      sw.style.background = color;
      item.appendChild(sw);
      item.appendChild(document.createTextNode(n + ": " + (last == null ? "—" : last + " " + chart.unit)));
      item.setAttribute("data-backend", n);
      chart.legend.appendChild(item);
    });
    chart.title.textContent = chart.base + (max > 0 ? " — peak " + (Math.round(max * 10) / 10) + " " + chart.unit : "");
  }

  function addPoint(p) {
    Object.keys(p.backends || {}).forEach(function (n) {
      var b = p.backends[n];
      (series[n] = series[n] || []).push({t: p.t, rate: b.rate, rtime: b.rtime});
      while (series[n].length && series[n][0].t < p.t - KEEP) series[n].shift();
    });
  }

  function redrawCharts() {
    if (!charts) return;
    if (!chartsReady) {
      charts.textContent = "";
      if (!Object.keys(series).length) {
        var p = document.createElement("p");
        p.className = "note"; p.id = "charts-empty";
        p.textContent = "No backend statistics yet: the charts start when the proxy's stats socket answers.";
        charts.appendChild(p);
        return;
      }
      charts.appendChild(rateChart.box); charts.appendChild(rtimeChart.box);
      chartsReady = true;
    }
    draw(rateChart); draw(rtimeChart);
  }

  // ---- live updates --------------------------------------------------------------------------------
  function clock(t) { return new Date(t * 1000).toLocaleTimeString([], {hour12: false}); }
  function connect() {
    if (!window.EventSource) { live.textContent = "static view (no live updates in this browser)"; return; }
    var es = new EventSource(url("/events"));
    es.addEventListener("update", function (ev) {
      var data = JSON.parse(ev.data);
      if (data.csrf) token = data.csrf;  // a restarted daemon has a new secret: its stream brings the new token
      replaceSections(data.sections);
      (data.history || []).forEach(addPoint);
      if (data.point) addPoint(data.point);
      redrawCharts();
      live.textContent = "live · updated " + clock(data.updated);
      live.className = "on";
      document.body.setAttribute("data-updated", data.updated);
    });
    es.onerror = function () { live.textContent = "connection lost · retrying"; live.className = "off"; };
  }

  // ---- actions -------------------------------------------------------------------------------------
  var dialog = document.getElementById("confirm");
  var body = document.getElementById("confirm-body");
  var okButton = document.getElementById("confirm-ok");

  function toast(text, bad) {
    var t = document.getElementById("toast");
    t.textContent = text;
    t.className = "show" + (bad ? " bad" : "");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(function () { t.className = ""; }, 5000);
  }

  function post(path, form) {
    var data = new URLSearchParams(new FormData(form));
    return fetch(url(path), {method: "POST", body: data, credentials: "same-origin",
                             headers: {"X-CSRF-Token": token, "Accept": "application/json"}})
      .then(function (r) { return r.json().then(function (j) { j.httpStatus = r.status; return j; }); });
  }

  function done() {
    if (pending) { var s = sectionOf(pending); if (s) delete dirty[s]; }
    pending = null;
    if (document.activeElement && document.activeElement.blur) document.activeElement.blur();
  }

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.classList || !form.classList.contains("action") || !dialog || !dialog.showModal) return;
    ev.preventDefault();
    pending = form;
    body.innerHTML = '<p class="note">Computing the planned transition…</p>';
    okButton.disabled = true;
    dialog.showModal();
    post("/dashboard/plan", form).then(function (plan) {
      body.innerHTML = plan.html || "";
      okButton.disabled = !plan.ok;
    }).catch(function (err) { body.textContent = "The plan could not be computed: " + err; });
  });

  if (okButton) okButton.addEventListener("click", function (ev) {
    ev.preventDefault();
    var form = pending;
    dialog.close();
    if (!form) return;
    post("/dashboard/do", form).then(function (answer) {
      if (answer.ok) toast("Done: " + (answer.change || "change applied") + (answer.user ? " (by " + answer.user + ")" : ""));
      else toast("Refused: " + (answer.error || answer.httpStatus), true);
    }).catch(function (err) { toast("Failed: " + err, true); }).then(done);
  });
  if (dialog) dialog.addEventListener("close", function () { if (dialog.returnValue !== "ok") done(); });

  redrawCharts();
  connect();
})();
