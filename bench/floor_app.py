"""The floor for cold start: a bare FastAPI + Mangum hello-world, nothing of ours."""

from fastapi import FastAPI
from mangum import Mangum

app = FastAPI()


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


handler = Mangum(app, lifespan="off")
