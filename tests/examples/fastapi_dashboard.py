from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from pipeline.dashboard import create_app

# PLANTPIPE_* from the environment, as `plantpipe dashboard` reads them; set
# PLANTPIPE_DASHBOARD_TOKEN unless only trusted people reach your service
dashboard = create_app()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with dashboard.router.lifespan_context(dashboard):  # opens Redis, closes it after
        yield


app = FastAPI(lifespan=lifespan)
app.mount("/dashboard", dashboard)  # pages at /dashboard/, its JSON API at /dashboard/api/


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
