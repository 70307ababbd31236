// Swagger UI start-up for EZ-API. nginx serves this file at
// /swagger/swagger-initializer.js in place of the one shipped in
// swagger-ui-dist (which points at the public petstore example), and the
// OpenAPI document itself at /swagger/doc.json (docs/openapi.json).
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "doc.json", // relative to /swagger/, so it also works behind a path prefix
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout",
  });
};
