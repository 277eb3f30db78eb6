"""A small documentation site for end-to-end tests, served on localhost by the tests themselves.

`/` links to four guide pages, to a members' area behind a login form (`/members/`: without the
session cookie every page of it redirects to `/login`) and to `/private/`, which robots.txt
disallows. `/guide/security` alone states a distinctive fact; the other guide pages and the
members' handbook mention the same terms without it (so a question finds several sources).
`/guide/status` says which edition it is: bump `DocsSite.edition` to change its content. Every
request is counted by path in `DocsSite.hits`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

USERNAME, PASSWORD = "reader", "members-only-pw"
SESSION = "docs-session-7f3a"
ROBOTS = "User-agent: *\nDisallow: /private/\n"
FACT = "forty-one days"  # the answer to QUESTION, stated on /guide/security only
QUESTION = "What is the key rotation window?"
MEMBERS_ONLY = "Members receive priority support from the platform team"


def article(title: str, body: str, *, nav: bool = True) -> HTMLResponse:
    menu = (
        "<header><nav><a href='/'>Docs home</a> <a href='/guide/install'>Install</a>"
        " <a href='/guide/configure'>Configure</a></nav></header>"
        if nav
        else ""
    )
    return HTMLResponse(
        f"<!doctype html><html lang='en'><head><title>{title}</title></head><body>{menu}"
        f"<main><article><h1>{title}</h1>{body}</article></main>"
        "<footer>Acme documentation, all rights reserved.</footer></body></html>"
    )


PAGES: dict[str, tuple[str, str]] = {
    "/": (
        "Acme Platform documentation",
        "<p>Welcome to the documentation of the Acme Platform, the service that runs your scheduled"
        " jobs. Start with the installation guide, then configure your workspace.</p>"
        "<ul><li><a href='/guide/install'>Installing the agent</a></li>"
        "<li><a href='/guide/configure'>Configuring a workspace</a></li>"
        "<li><a href='/guide/security'>Security and API keys</a></li>"
        "<li><a href='/guide/status'>Service status</a></li>"
        "<li><a href='/members/'>Members area</a></li>"
        "<li><a href='/private/'>Internal notes</a></li></ul>",
    ),
    "/guide/install": (
        "Installing the agent",
        "<p>The agent runs on Linux and macOS. Download the package for your platform and run the"
        " installer as an administrator.</p>"
        "<ol><li>Download the package.</li><li>Run <code>acme-agent install</code>.</li>"
        "<li>Check the agent with <code>acme-agent status</code>.</li></ol>"
        "<pre><code class='language-sh'>acme-agent install --workspace demo</code></pre>",
    ),
    "/guide/configure": (
        "Configuring a workspace",
        "<p>A workspace holds your jobs, their schedules and the API keys that start them. Each"
        " API key has a key rotation window; the security guide says how long it is.</p>"
        "<ul><li>Name the workspace.</li><li>Invite your team.</li><li>Create an API key.</li></ul>",
    ),
    "/guide/security": (
        "Security and API keys",
        "<p>Every API key must be replaced before its key rotation window closes. The key rotation"
        f" window is {FACT}; after it the key stops working and jobs that use it fail.</p>"
        "<ul><li>Keys are shown once, when they are created.</li>"
        "<li>Revoked keys stop working at once.</li></ul>",
    ),
    "/members/": (
        "Members area",
        "<p>Resources for paying members of the Acme Platform.</p>"
        "<ul><li><a href='/members/handbook'>The members' handbook</a></li></ul>",
    ),
    "/members/handbook": (
        "Members' handbook",
        f"<p>{MEMBERS_ONLY}, by e-mail and by phone. Members may ask support to extend the key"
        " rotation window of a key during an incident.</p>"
        "<ul><li>Support answers within four hours.</li><li>Incidents are reviewed monthly.</li></ul>",
    ),
    "/private/": (
        "Internal notes",
        "<p>Not for crawlers.</p><ul><li><a href='/private/salaries'>Salaries</a></li></ul>",
    ),
    "/private/salaries": ("Salaries", "<p>Confidential.</p>"),
}

LOGIN_FORM = (
    "<form method='post' action='/login'><label>User <input name='username'></label>"
    " <label>Password <input type='password' name='password'></label>"
    " <button type='submit'>Sign in</button></form>"
)


@dataclass
class DocsSite:
    app: Starlette
    hits: Counter[str] = field(default_factory=Counter)
    edition: int = 1

    def status_text(self) -> str:
        return f"Edition {self.edition} of the status report: every region is serving jobs normally."


def docs_site() -> DocsSite:
    site = DocsSite(Starlette())

    async def static(request: Request) -> Response:
        site.hits[request.url.path] += 1
        path = request.url.path
        if path.startswith("/members/") and request.cookies.get("session") != SESSION:
            return RedirectResponse("/login", status_code=303)
        title, body = PAGES[path]
        return article(title, body)

    async def status(request: Request) -> Response:
        site.hits[request.url.path] += 1
        return article("Service status", f"<p>{site.status_text()}</p><p>Maintenance runs on Saturdays.</p>")

    async def robots(request: Request) -> Response:
        site.hits[request.url.path] += 1
        return PlainTextResponse(ROBOTS)

    async def login(request: Request) -> Response:
        site.hits[request.url.path] += 1
        if request.method == "POST":
            form = parse_qs((await request.body()).decode())
            if form.get("username") == [USERNAME] and form.get("password") == [PASSWORD]:
                response = RedirectResponse("/members/", status_code=303)
                response.set_cookie("session", SESSION, httponly=True)
                return response
            return article("Sign in", "<p class='error'>Wrong password</p>" + LOGIN_FORM, nav=False)
        return article("Sign in", LOGIN_FORM, nav=False)

    async def not_found(request: Request, exc: Exception) -> Response:
        site.hits[request.url.path] += 1
        return HTMLResponse("<title>Missing</title>gone", status_code=404)

    routes = [Route(path, static) for path in PAGES]
    routes += [
        Route("/guide/status", status),
        Route("/robots.txt", robots),
        Route("/login", login, methods=["GET", "POST"]),
    ]
    site.app = Starlette(routes=routes, exception_handlers={404: not_found})
    return site
