// The API reference at /docs: /openapi.json rendered by this package, so the page loads
// nothing from another origin (Swagger UI would load its scripts from a public CDN).

function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, v);
  for (const k of kids.flat()) if (k !== null && k !== undefined) el.append(k);
  return el;
}

const refName = (ref) => (ref || "").split("/").pop();

function schemaText(schema) {
  if (!schema) return "";
  if (schema.$ref) return refName(schema.$ref);
  if (schema.type === "array") return `array of ${schemaText(schema.items)}`;
  if (schema.anyOf) return schema.anyOf.map(schemaText).join(" | ");
  return schema.type || "object";
}

function operation(path, method, op) {
  const params = (op.parameters || []).map((p) => h("li", {}, h("code", {}, p.name), ` (${p.in}${p.required ? ", required" : ""}): ${schemaText(p.schema)}`));
  const body = op.requestBody?.content ? Object.entries(op.requestBody.content).map(([type, c]) => h("li", {}, `${type}: ${schemaText(c.schema)}`)) : [];
  const responses = Object.entries(op.responses || {}).map(([status, r]) => h("li", {}, h("code", {}, status), ` ${r.description || ""}`,
    r.content ? ` (${Object.entries(r.content).map(([type, c]) => `${type}${c.schema ? `: ${schemaText(c.schema)}` : ""}`).join(", ")})` : ""));
  return h("section", { class: "card op", id: `${method}-${path}` },
    h("h2", {}, h("span", { class: `pill method ${method}` }, method.toUpperCase()), " ", h("code", {}, path)),
    op.summary ? h("p", {}, op.summary) : null,
    op.description && op.description !== op.summary ? h("p", { class: "meta" }, op.description) : null,
    params.length ? [h("h3", {}, "Parameters"), h("ul", {}, params)] : null,
    body.length ? [h("h3", {}, "Body"), h("ul", {}, body)] : null,
    h("h3", {}, "Responses"), h("ul", {}, responses));
}

/** Fill `main` with the reference of this server's API. */
export async function render(main) {
  let spec;
  try { spec = await (await fetch("/openapi.json")).json(); } catch {
    main.replaceChildren(h("h1", {}, "API reference"), h("p", {}, "Could not load /openapi.json."));
    return;
  }
  const ops = [];
  for (const [path, methods] of Object.entries(spec.paths || {})) {
    for (const [method, op] of Object.entries(methods)) ops.push(operation(path, method, op));
  }
  const schemas = Object.entries(spec.components?.schemas || {}).map(([name, s]) =>
    h("details", { class: "card", id: `schema-${name}` }, h("summary", {}, name), h("pre", {}, JSON.stringify(s, null, 2))));
  main.replaceChildren(h("h1", {}, `${spec.info?.title || "API"} ${spec.info?.version || ""}`),
    spec.info?.description ? h("p", {}, spec.info.description) : null,
    h("p", {}, "The machine-readable description: ", h("a", { href: "/openapi.json" }, "/openapi.json"), "."),
    ...ops, h("h2", {}, "Schemas"), ...schemas);
}
