"""Bearer-token access control (--api-keys / DAT_API_KEYS): inference and model routes need a
key when keys are set, health and metrics stay open unless switched, keys never reach the logs."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service import create_app
from service.__main__ import main
from tests.helpers.app import serve, settings
from tests.helpers.images import sample_png
from tests.helpers.server import start, stop, wait_ready

pytestmark = pytest.mark.anyio

KEYS = "first-key-0123456789,second-key-9876543210"
FIRST, SECOND = KEYS.split(",")
PNG = {"content-type": "image/png"}
IMAGE = sample_png(0)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_inference_and_models_need_a_key_health_and_metrics_do_not(backend):
    async with serve(create_app(settings(api_keys=KEYS), backend=backend)) as client:
        missing = await client.post("/classify", content=IMAGE, headers=PNG)
        wrong = await client.post("/classify", content=IMAGE, headers={**PNG, **bearer("nope")})
        basic = await client.post(
            "/classify", content=IMAGE, headers={**PNG, "authorization": f"Basic {FIRST}"}
        )
        first = await client.post("/classify", content=IMAGE, headers={**PNG, **bearer(FIRST)})
        second = await client.post("/classify", content=IMAGE, headers={**PNG, **bearer(SECOND)})
        models = await client.get("/models")
        models_with_key = await client.get("/models", headers=bearer(SECOND))
        v2_infer = await client.post("/v2/models/x/infer", json={"inputs": []})
        v2_metadata = await client.get("/v2")
        unknown_path = await client.get("/no/such/route")
        open_ = [
            await client.get(path)
            for path in (
                "/health/live",
                "/health/ready",
                "/v2/health/live",
                "/v2/health/ready",
                "/metrics",
                "/openapi.json",
            )
        ]
    for refused in (missing, wrong, basic, models, unknown_path):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json()["error"]["type"] == "unauthorized"
        assert FIRST not in refused.text and SECOND not in refused.text
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert v2_infer.status_code == 401 and v2_infer.json() == {"error": v2_infer.json()["error"]}
    assert isinstance(v2_infer.json()["error"], str)  # the v2 protocol's error shape
    assert v2_metadata.status_code == 401
    assert first.status_code == 200 and second.status_code == 200  # either key: rotation
    assert models_with_key.status_code == 200
    assert [r.status_code for r in open_] == [200] * 6


async def test_health_and_metrics_can_be_protected_too(backend):
    app = create_app(settings(api_keys=KEYS, protect_health=True, protect_metrics=True), backend=backend)
    async with serve(app) as client:
        closed = [
            await client.get(path)
            for path in ("/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready", "/metrics")
        ]
        opened = [
            await client.get(path, headers=bearer(FIRST))
            for path in ("/health/live", "/health/ready", "/metrics")
        ]
    assert [r.status_code for r in closed] == [401] * 5
    assert [r.status_code for r in opened] == [200] * 3


async def test_without_keys_nothing_asks_for_one(backend):
    async with serve(create_app(settings(protect_health=True), backend=backend)) as client:
        answers = [
            await client.post("/classify", content=IMAGE, headers=PNG),
            await client.get("/models"),
            await client.get("/health/live"),
        ]
        schema = (await client.get("/openapi.json")).json()
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert "securitySchemes" not in schema.get("components", {})


async def test_the_schema_says_which_routes_need_a_key(backend):
    async with serve(create_app(settings(api_keys=KEYS), backend=backend)) as client:
        schema = (await client.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    paths = schema["paths"]
    for path, method in (
        ("/classify", "post"),
        ("/models", "get"),
        ("/v2/models/{model_name}/infer", "post"),
    ):
        assert paths[path][method]["security"] == [{"bearer": []}], path
        assert "401" in paths[path][method]["responses"], path
    for path in ("/health/live", "/metrics", "/v2/health/ready"):
        assert "security" not in paths[path]["get"] and "401" not in paths[path]["get"]["responses"]


def test_keys_never_reach_the_settings_repr_nor_an_error(monkeypatch, capsys):
    s = settings(api_keys=KEYS)
    assert s.api_key_list == (FIRST, SECOND)
    for text in (repr(s), str(s), json.dumps(s.model_dump(mode="json"))):
        assert FIRST not in text and SECOND not in text
    # an invalid combination prints its reason, not the settings it was given
    monkeypatch.setenv("DAT_API_KEYS", KEYS)
    assert main(["--max-images-per-request", "64", "--max-batch-size", "8"]) == 2
    err = capsys.readouterr().err
    assert "must not exceed max_batch_size" in err and FIRST not in err and SECOND not in err


def test_tritonclient_sends_the_key_as_a_header_and_keys_stay_out_of_the_logs(tiny_config_file):
    process, url = start(
        "--model", str(tiny_config_file), "--no-warmup", "--detector", "none", env={"DAT_API_KEYS": KEYS}
    )
    try:
        wait_ready(process, url)
        name = httpx.get(f"{url}/models", headers=bearer(FIRST)).json()["models"][0]["name"]
        images = triton.InferInput("image_bytes", [2], "BYTES")
        images.set_data_from_numpy(np.array([sample_png(1), sample_png(2)], dtype=np.object_))
        with triton.InferenceServerClient(url.removeprefix("http://")) as client:
            assert client.is_server_live()  # health stays open
            with pytest.raises(InferenceServerException, match="401|API key") as refused:
                client.infer(name, [images])
            for key in (FIRST, SECOND):
                headers = bearer(key)
                assert client.get_model_metadata(name, headers=headers)["name"] == name
                logits = client.infer(name, [images], headers=headers).as_numpy("logits")
                assert logits.shape == (2, 10)
    finally:
        stop(process)
    text = process.stderr.read()
    assert FIRST not in text and SECOND not in text
    logs = [json.loads(line) for line in text.splitlines() if line.strip()]
    (started,) = [e for e in logs if e["msg"] == "starting"]
    assert started["settings"]["api_keys"] == "**********"
    refusals = [e for e in logs if e["logger"] == "service.access" and e["status"] == 401]
    assert refusals and all(e["path"].startswith("/v2/models/") for e in refusals)
    assert "401" in str(refused.value)
