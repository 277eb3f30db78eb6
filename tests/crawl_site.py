"""A web app for crawl tests, served on localhost by the tests themselves."""

from __future__ import annotations

import asyncio
from collections import Counter
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

SESSION = "s3ss10n-0k"


def page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html><head><title>{title}</title></head><body>{body}</body></html>")


def build_site(*, other_origin: str, private_origin: str, slow_seconds: float = 3.0) -> tuple[Starlette, Counter[str]]:
    hits: Counter[str] = Counter()

    async def count(request: Request) -> None:
        hits[request.url.path] += 1

    async def home(request: Request) -> Response:
        await count(request)
        return page(
            "Home",
            f"""
          <a href="/about">About</a> <a href="/about#team">Team</a> <a href="/products">Products</a>
          <a href="/products?b=2&a=1">Filtered</a> <a href="/products?a=1&b=2">Filtered again</a>
          <a href="/app#/dashboard">Dashboard</a> <a href="/app#!/settings">Settings</a>
          <a href="{other_origin}/external">Partner</a> <a href="mailto:hi@example.com">Mail</a>
          <a href="javascript:void(0)">Nothing</a> <a href="/slow">Slow</a>
          <a href="/redirect-private">Go</a> <a href="/metadata-fetch">Meta</a> <a href="/missing">Missing</a>
          <img src="/image.png">""",
        )

    async def about(request: Request) -> Response:
        await count(request)
        return page("About", '<h2 id="team">Team</h2><a href="/">Home</a> <a href="/contact">Contact</a>')

    async def contact(request: Request) -> Response:
        await count(request)
        return page(
            "Contact",
            """
          <form action="/contact" method="post" id="contact">
            <input type="hidden" name="csrf" value="t">
            <input name="name" required> <input type="email" name="email">
            <textarea name="message" required></textarea> <button type="submit">Send</button>
          </form><a href="/">Home</a>""",
        )

    async def products(request: Request) -> Response:
        await count(request)
        return page("Products", '<a href="/products/1">One</a> <a href="/products/2">Two</a> <a href="/">Home</a>')

    async def product(request: Request) -> Response:
        await count(request)
        n = request.path_params["n"]
        return page(f"Product {n}", '<a href="/products">Back</a>')

    async def app(request: Request) -> Response:
        await count(request)
        return page(
            "App",
            """
          <div id="view"></div>
          <input type="search" name="q" placeholder="Search"> <select name="sort"><option>new</option></select>
          <script>
            const views = {
              "#/dashboard": '<a href="#/reports">Reports</a>',
              "#!/settings": '<input name="display_name" required>',
              "#/reports": '<a href="/app#/dashboard">Back</a>',
            };
            document.getElementById("view").innerHTML = views[location.hash] || "";
          </script>""",
        )

    async def slow(request: Request) -> Response:
        await count(request)
        await asyncio.sleep(slow_seconds)
        return page("Slow", "finally")

    async def redirect_private(request: Request) -> Response:
        await count(request)
        return RedirectResponse(f"{private_origin}/secret", status_code=302)

    async def metadata_fetch(request: Request) -> Response:
        await count(request)
        return page(
            "Meta",
            """<p id="out">…</p><script>
          fetch("http://169.254.169.254/latest/meta-data/iam/security-credentials/")
            .then(r => r.text()).then(t => document.getElementById("out").textContent = t)
            .catch(() => document.getElementById("out").textContent = "blocked");
        </script>""",
        )

    async def image(request: Request) -> Response:
        await count(request)
        return Response(b"\x89PNG", media_type="image/png")

    async def login(request: Request) -> Response:
        await count(request)
        if request.method == "POST":
            form = parse_qs((await request.body()).decode())
            if form.get("username") == ["ada"] and form.get("password") == ["correct horse"]:
                response = RedirectResponse("/account", status_code=303)
                response.set_cookie("session", SESSION, httponly=True)
                return response
            return page("Login", '<p class="error">Wrong password</p>' + LOGIN_FORM)
        return page("Login", LOGIN_FORM)

    async def account(request: Request) -> Response:
        await count(request)
        if request.cookies.get("session") != SESSION:
            return RedirectResponse("/login", status_code=303)
        return page("Account", '<h1 id="welcome">Welcome ada</h1><a href="/account/settings">Settings</a>')

    async def account_settings(request: Request) -> Response:
        await count(request)
        if request.cookies.get("session") != SESSION:
            return RedirectResponse("/login", status_code=303)
        return page("Account settings", '<form method="post"><input name="display_name"></form>')

    async def missing(request: Request) -> Response:
        await count(request)
        return page("Not found", "nothing here")

    routes = [
        Route("/", home),
        Route("/about", about),
        Route("/contact", contact),
        Route("/products", products),
        Route("/products/{n}", product),
        Route("/app", app),
        Route("/slow", slow),
        Route("/redirect-private", redirect_private),
        Route("/metadata-fetch", metadata_fetch),
        Route("/image.png", image),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/account", account),
        Route("/account/settings", account_settings),
    ]
    site = Starlette(routes=routes)

    async def not_found(request: Request, exc: Exception) -> Response:
        await count(request)
        return HTMLResponse("<title>Missing</title>gone", status_code=404)

    site.add_exception_handler(404, not_found)
    return site, hits


LOGIN_FORM = """<form method="post" action="/login"><input name="username"> <input type="password" name="password">
  <button type="submit">Sign in</button></form>"""


def counting_site() -> tuple[Starlette, Counter[str]]:
    """A server that must never be reached: it only counts what reaches it."""
    hits: Counter[str] = Counter()

    async def anything(request: Request) -> Response:
        hits[request.url.path] += 1
        return PlainTextResponse("SECRET")

    return Starlette(routes=[Route("/{path:path}", anything)]), hits
