() => {
  const FIELD = "input, select, textarea";
  const field = (el) => ({
    name: el.getAttribute("name") || el.id || null,
    type: (el.getAttribute("type") || el.tagName).toLowerCase(),
    tag: el.tagName.toLowerCase(),
    required: el.required === true,
  });
  const links = [];
  for (const a of document.querySelectorAll("a[href], area[href]")) {
    if (a.href) links.push(a.href);
  }
  const forms = [];
  for (const f of document.forms) {
    forms.push({
      action: f.action || document.location.href,
      method: (f.getAttribute("method") || "get").toLowerCase(),
      id: f.id || null,
      name: f.getAttribute("name"),
      standalone: false,
      fields: Array.from(f.elements).filter((e) => e.matches(FIELD)).map(field),
    });
  }
  // Inputs outside any <form>: single-page apps submit them from script.
  const loose = Array.from(document.querySelectorAll(FIELD)).filter((e) => !e.form && e.type !== "hidden");
  if (loose.length) forms.push({ action: null, method: null, id: null, name: null, standalone: true, fields: loose.map(field) });
  return { title: document.title, links, forms };
}
