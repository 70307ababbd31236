// Swagger UI start-up for EZ-API.
//
// nginx serves this file at /swagger/swagger-initializer.js in place of the
// one shipped in swagger-ui-dist (which loads a public example API),
// and the OpenAPI document at /swagger/doc.json (docs/openapi.json, generated
// by scripts/gen-openapi.py). The document's URL is resolved against the page
// (/swagger/ or /swagger/index.html -> /swagger/doc.json), so the UI also
// works when the API is published under a path prefix.
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: new URL("doc.json", window.location.href).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    // Shows "x-ezapi-status: planned" on operations this build does not serve yet.
    showExtensions: true,
    displayOperationId: true,
    // Credentials typed into "Authorize" stay in the page only (not persisted
    // to local storage): an admin token should not outlive the tab.
    persistAuthorization: false,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout",
  });
};
