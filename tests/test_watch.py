"""Watch semantics the clients rely on: bookmarks, resuming from a resourceVersion, 410 Gone."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.resources import ResourceRegistry
from labs.embedded.apiserver.server import ApiServer
from labs.embedded.apiserver.store import Store

TOKEN = "t0ken"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


def make_api(store: Store) -> ObjectApi:
    api = ObjectApi(store, ResourceRegistry())
    namespaces = api.registry.lookup("", "v1", "namespaces")
    assert namespaces is not None
    if api.find(namespaces, "", "default") is None:
        api.create(namespaces, "", {"metadata": {"name": "default"}})
    return api


async def watch_lines(client: TestClient, query: str) -> list[dict[str, Any]]:
    response = await client.get(f"{CONFIGMAPS}?watch=true&{query}", headers=HEADERS)
    assert response.status == 200, await response.text()
    return [json.loads(line) for line in (await response.text()).splitlines()]


def test_quiet_watch_gets_bookmarks_and_events() -> None:
    """Does a watch with allowWatchBookmarks get BOOKMARKs while quiet, and events in between?"""

    async def scenario() -> None:
        api = make_api(Store(None))
        server = ApiServer(api, TOKEN)
        server.bookmark_interval = 0.2
        async with TestClient(TestServer(server.app())) as client:
            rt = api.registry.lookup("", "v1", "configmaps")
            assert rt is not None

            async def create_later() -> None:
                await asyncio.sleep(1.0)
                api.create(rt, "default", {"metadata": {"name": "late"}})

            creator = asyncio.create_task(create_later())
            events = await watch_lines(
                client, f"resourceVersion={api.store.rv}&allowWatchBookmarks=true"
                        "&timeoutSeconds=3")
            await creator
        types = [e["type"] for e in events]
        assert "ADDED" in types
        assert types.count("BOOKMARK") >= 2
        added = next(e for e in events if e["type"] == "ADDED")
        assert added["object"]["metadata"]["name"] == "late"
        last_bookmark = [e for e in events if e["type"] == "BOOKMARK"][-1]
        assert int(last_bookmark["object"]["metadata"]["resourceVersion"]) >= int(
            added["object"]["metadata"]["resourceVersion"])

    asyncio.run(scenario())


def test_resume_from_resource_version_and_gone_after_restart(tmp_path: Path) -> None:
    """Does a watch resume after a given rv, and answer 410 for an rv older than the restart?"""

    async def scenario() -> None:
        store = Store(tmp_path / "state.db")
        api = make_api(store)
        rt = api.registry.lookup("", "v1", "configmaps")
        assert rt is not None
        first = api.create(rt, "default", {"metadata": {"name": "a"}}).object
        api.create(rt, "default", {"metadata": {"name": "b"}})
        async with TestClient(TestServer(ApiServer(api, TOKEN).app())) as client:
            events = await watch_lines(
                client, f"resourceVersion={first['metadata']['resourceVersion']}"
                        "&timeoutSeconds=1")
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "b")]
        store.close()

        reopened = make_api(Store(tmp_path / "state.db"))
        async with TestClient(TestServer(ApiServer(reopened, TOKEN).app())) as client:
            response = await client.get(
                f"{CONFIGMAPS}?watch=true&resourceVersion={first['metadata']['resourceVersion']}",
                headers=HEADERS)
            body = await response.json()
        assert response.status == 410
        assert (body["kind"], body["reason"]) == ("Status", "Expired")
        reopened.store.close()

    asyncio.run(scenario())
