from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request, UploadFile

from pipeline import PipelineClient, RedisFull


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with PipelineClient.from_settings() as client:  # PLANTPIPE_* from the environment
        app.state.client = client
        yield  # the client is closed when the app shuts down


app = FastAPI(lifespan=lifespan)


def pipeline(request: Request) -> PipelineClient:
    client: PipelineClient = request.app.state.client
    return client


@app.post("/sessions", status_code=202)
async def create(request: Request, photos: list[UploadFile]) -> dict[str, str]:
    datas = [await p.read() for p in photos]
    types = [p.content_type for p in photos]
    try:
        session_id = await pipeline(request).submit(datas, {"user": "42"}, content_types=types)
    except ValueError as exc:  # InvalidImage (not a photo, too big, wrong type) is a ValueError
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    except RedisFull as exc:  # Redis near maxmemory: nothing was stored, try again later
        raise HTTPException(
            status_code=503, detail=exc.reason, headers={"Retry-After": "30"}
        ) from exc
    return {"session_id": session_id}  # at once: the work goes on in the workers


@app.get("/sessions/{session_id}")
async def show(request: Request, session_id: str) -> dict[str, Any]:
    try:
        record = await pipeline(request).status(session_id)
    except LookupError as exc:  # unknown or expired session id
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    return record.model_dump(mode="json")
