// The admin page's few behaviours, without inline scripts (the Content-Security-Policy allows
// only this origin's files): a confirmation before destructive forms. (A dispatch text's
// characters and SMS parts, and its preview for the clients, come from the server, through
// htmx: one rule, the service's.)
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});
