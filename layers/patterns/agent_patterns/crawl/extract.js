(limits) => {
  // Everything is capped (see PageLimits): a hostile page cannot grow the result without bound.
  const FIELD = "input, select, textarea";
  const truncated = {};
  const cut = (value, max, what) => {
    if (value == null) return value;
    const text = String(value);
    if (text.length <= max) return text;
    truncated[what] = true;
    return text.slice(0, max);
  };
  const field = (el) => ({
    name: cut(el.getAttribute("name") || el.id || null, limits.textChars, "field_names"),
    type: cut((el.getAttribute("type") || el.tagName).toLowerCase(), 64, "field_types"),
    tag: el.tagName.toLowerCase(),
    required: el.required === true,
  });
  const fields = (elements) => {
    const all = elements.filter((e) => e.matches(FIELD));
    if (all.length > limits.fields) truncated.fields = true;
    return all.slice(0, limits.fields).map(field);
  };
  const links = new Set();
  let linksSeen = 0;
  for (const a of document.querySelectorAll("a[href], area[href]")) {
    if (!a.href || a.href.length > limits.urlChars) continue;
    linksSeen += 1;
    if (links.size < limits.links) links.add(a.href);
    else if (!links.has(a.href)) truncated.links = true;
  }
  const forms = [];
  for (const f of document.forms) {
    if (forms.length >= limits.forms) { truncated.forms = true; break; }
    forms.push({
      action: cut(f.action || document.location.href, limits.urlChars, "form_actions"),
      method: cut((f.getAttribute("method") || "get").toLowerCase(), 16, "form_methods"),
      id: cut(f.id || null, limits.textChars, "form_ids"),
      name: cut(f.getAttribute("name"), limits.textChars, "form_names"),
      standalone: false,
      fields: fields(Array.from(f.elements)),
    });
  }
  // Inputs outside any <form>: single-page apps submit them from script.
  const loose = Array.from(document.querySelectorAll(FIELD)).filter((e) => !e.form && e.type !== "hidden");
  if (loose.length && forms.length < limits.forms) {
    forms.push({ action: null, method: null, id: null, name: null, standalone: true, fields: fields(loose) });
  } else if (loose.length) {
    truncated.forms = true;
  }
  return { title: cut(document.title, limits.textChars, "title"), links: Array.from(links), forms, truncated };
}
