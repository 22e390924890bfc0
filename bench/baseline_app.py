"""The seeds' design, kept as the benchmark's baseline: FastAPI + uvicorn, no batching.

The model loads in the lifespan; each request decodes its image, and the eager PyTorch forward
pass runs in the event loop, one request at a time. Same checkpoint (the model store tag in
PYRAMIDNET_MODEL), same preprocessing, same answer shape as the service.

    PYRAMIDNET_MODEL=pyramidnet-cifar10:latest uvicorn bench.baseline_app:app --port 3100
"""

from __future__ import annotations

import io
import os
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, File, UploadFile
from PIL import Image

from model_store import DEFAULT_MODEL_NAME, load_classifier, preprocess_batch

state = {}


@asynccontextmanager
async def lifespan(app: FastAPI):
    tag = os.environ.get("PYRAMIDNET_MODEL", f"{DEFAULT_MODEL_NAME}:latest")
    state["model"] = load_classifier(tag, os.environ.get("PYRAMIDNET_DEVICE", "auto"), "eager", "fp32")
    yield


app = FastAPI(lifespan=lifespan)


def predict(images: list[Image.Image]) -> list[dict]:
    model = state["model"]
    probabilities, classes = model.predict_proba(preprocess_batch(images, model.spec)), model.spec.classes
    return [
        {"label": classes[int(p.argmax())], "probabilities": dict(zip(classes, p.tolist(), strict=True))}
        for p in probabilities
    ]


@app.post("/classify")
async def classify(image: UploadFile = File(...)) -> dict:
    return predict([Image.open(io.BytesIO(await image.read()))])[0]


@app.post("/classify_batch")
async def classify_batch(images: list[UploadFile] = File(...)) -> list[dict]:
    return predict([Image.open(io.BytesIO(await f.read())) for f in images])


@app.get("/readyz")
async def readyz() -> dict:
    return {"threads": torch.get_num_threads()}
