// The console's own script, a progressive enhancement: every page reads and
// works without it. It shows times in the reader's zone with a relative form,
// and keeps the TLS checkbox of a server without TLS unticked and disabled.
(function () {
  "use strict";

  var relative = typeof Intl.RelativeTimeFormat === "function"
    ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" })
    : null;
  var local = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", timeZoneName: "short"
  });

  function ago(ms) {
    if (!relative) { return ""; }
    var seconds = Math.round((ms - Date.now()) / 1000);
    var steps = [[60, "second"], [60, "minute"], [24, "hour"], [30, "day"], [12, "month"]];
    var value = seconds;
    for (var i = 0; i < steps.length; i++) {
      if (Math.abs(value) < steps[i][0]) { return relative.format(value, steps[i][1]); }
      value = Math.round(value / steps[i][0]);
    }
    return relative.format(value, "year");
  }

  // Every <time datetime> the server rendered in UTC: the local time and zone,
  // then how long ago; the ISO value stays in the tooltip.
  function times(root) {
    var all = root.querySelectorAll ? root.querySelectorAll("time[datetime]") : [];
    for (var i = 0; i < all.length; i++) {
      var ms = Date.parse(all[i].getAttribute("datetime"));
      if (isNaN(ms)) { continue; }
      var when = ago(ms);
      all[i].textContent = local.format(new Date(ms)) + (when ? " (" + when + ")" : "");
    }
  }

  // With security None there is no certificate: the box is unticked and
  // disabled, and ticked again when TLS is chosen if it was before.
  function tlsVerify() {
    var security = document.getElementById("f-security");
    var verify = document.getElementById("f-tls_verify");
    if (!security || !verify) { return; }
    // What the box should say once TLS is chosen: as rendered, or on (the
    // default) for a server rendered without TLS.
    var wanted = security.value === "none" ? true : verify.checked;
    function follow() {
      var none = security.value === "none";
      if (none && !verify.disabled) { wanted = verify.checked; }
      verify.disabled = none;
      verify.checked = none ? false : wanted;
    }
    security.addEventListener("change", follow);
    follow();
  }

  document.addEventListener("DOMContentLoaded", function () {
    times(document);
    tlsVerify();
  });
  // Parts of a page htmx swaps in (a test message's steps) carry times too.
  document.addEventListener("htmx:load", function (event) { times(event.target); });
})();
