// Starts Swagger UI on /api/docs. A file rather than an inline script, so the page runs under
// the app's Content-Security-Policy (script-src 'self'). Loaded after swagger-ui-bundle.js
// (both deferred, so in order, once the document is parsed).
const root = document.getElementById("swagger-ui");
window.ui = window.SwaggerUIBundle({
  url: root.dataset.specUrl,
  domNode: root,
  deepLinking: true,
  validatorUrl: null, // never send the spec to an outside validator
});
