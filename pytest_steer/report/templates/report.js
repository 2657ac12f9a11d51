(function () {
  const text = document.getElementById('case-filter');
  const differs = document.getElementById('case-differs');
  const count = document.getElementById('case-count');
  const cases = Array.from(document.querySelectorAll('details.case'));
  function apply() {
    const query = text.value.trim().toLowerCase();
    let shown = 0;
    for (const item of cases) {
      const visible = (!query || item.dataset.search.includes(query)) && (!differs.checked || item.dataset.differs === '1');
      item.hidden = !visible;
      if (visible) { shown += 1; }
    }
    count.textContent = String(shown);
  }
  text.addEventListener('input', apply);
  differs.addEventListener('change', apply);
})();
