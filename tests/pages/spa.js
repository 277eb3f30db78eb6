// A single-page app's bundle: the document is an empty shell until this runs.
(function () {
  const state = {
    release: "4.2",
    notes: [
      ["Added", "Offline mode keeps the last 500 messages on the device."],
      ["Fixed", "Push notifications arrive once, not twice, after a reconnect."],
      ["Changed", "Exports are written as UTF-8 CSV by default."],
    ],
    build: "7f3c9e1",
  };
  const h = (tag, attrs, ...children) => {
    const el = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => el.setAttribute(k, v));
    children.forEach((c) => el.append(c));
    return el;
  };
  const nav = h("nav", { class: "app-nav" },
    h("a", { href: "#/inbox" }, "Inbox"), " ", h("a", { href: "#/contacts" }, "Contacts"), " ",
    h("a", { href: "#/preferences" }, "Account preferences"));
  const rows = state.notes.map(([kind, text]) => h("tr", {}, h("td", {}, kind), h("td", {}, text)));
  const main = h("main", { class: "app-main" },
    h("h1", {}, `What's new in Chatterbox ${state.release}`),
    h("p", {}, "This release focuses on reliability on flaky mobile networks. Read the ",
      h("a", { href: "/docs/upgrading" }, "upgrade notes"), " before you roll it out."),
    h("table", { class: "changes" },
      h("thead", {}, h("tr", {}, h("th", {}, "Kind"), h("th", {}, "Change"))),
      h("tbody", {}, ...rows)),
    h("h2", {}, "Known issues"),
    h("ul", {}, h("li", {}, "Attachments over 2 GB still fail to upload on iOS.")));
  const footer = h("footer", { class: "app-footer" }, `Chatterbox web client, build ${state.build}. Status: all systems operational.`);
  document.title = `Release ${state.release} · Chatterbox`;
  document.getElementById("root").append(h("header", { class: "app-header" }, h("span", { class: "logo" }, "Chatterbox"), nav), main, footer);
})();
