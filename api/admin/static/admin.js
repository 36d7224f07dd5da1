// The admin page's few behaviours, without inline scripts (the Content-Security-Policy allows
// only this origin's files): a confirmation before destructive forms, and a live count of a
// text's characters.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});
document.addEventListener("input", (event) => {
  const field = event.target;
  if (field.dataset && field.dataset.counter) {
    const counter = document.getElementById(field.dataset.counter);
    if (counter) {
      counter.textContent = `${field.value.length} / ${field.maxLength}`;
    }
  }
});
