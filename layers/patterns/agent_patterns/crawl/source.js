(maxChars) => {
  // The rendered page as HTML for the Markdown step (crawl/markdown.py): a copy of the live DOM
  // (what scripts built, not what the server sent) without what is never content: scripts,
  // styles, <noscript> (a browser running scripts does not show it), inline SVG, frames, buttons
  // and form controls. Links are made absolute. The page itself is left untouched.
  const root = document.documentElement.cloneNode(true);
  const never = "script, style, noscript, template, svg, canvas, iframe, object, embed, button, input, select, textarea";
  for (const el of root.querySelectorAll(never)) {
    el.remove();
  }
  for (const a of root.querySelectorAll("a[href]")) {
    // A cloned element still belongs to this document: `.href` resolves against its base URL.
    if (/^(https?|mailto|tel):$/.test(a.protocol)) a.setAttribute("href", a.href);
    else a.removeAttribute("href");
  }
  // The page's main heading: its first <h1> outside navigation and outside the page's own banner
  // (a <header> that is not an article's or a section's).
  let heading = "";
  for (const h of document.querySelectorAll("h1")) {
    if (h.closest("nav, [role=navigation], [role=banner]")) continue;
    const header = h.closest("header");
    if (header && !header.closest("article, main, section, [role=main]")) continue;
    heading = h.textContent.replace(/\s+/g, " ").trim().slice(0, 1000);
    break;
  }
  const meta = document.querySelector('meta[http-equiv="content-language" i]');
  const lang = (document.documentElement.getAttribute("lang") || (meta && meta.content) || "").trim();
  let html = root.outerHTML;
  const truncated = html.length > maxChars;
  if (truncated) html = html.slice(0, maxChars);
  return { html, lang: lang.slice(0, 64), heading, truncated };
}
