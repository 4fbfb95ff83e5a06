// Live pages: reload the marked part when job events arrive (at most once a second).
(function () {
  var live = document.querySelector('[data-live]');
  if (!live || !window.EventSource) return;
  var pending = false;
  var source = new EventSource('/live');
  source.addEventListener('job', function () {
    if (pending) return;
    pending = true;
    setTimeout(function () {
      pending = false;
      var url = new URL(window.location.href);
      url.searchParams.set('partial', '1');
      fetch(url, { credentials: 'same-origin' }).then(function (r) {
        return r.ok ? r.text() : null;
      }).then(function (html) {
        if (html) live.innerHTML = html;
      });
    }, 1000);
  });
})();
