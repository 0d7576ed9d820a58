"""Calls a running Outpost API through a client generated from its OpenAPI
document by openapi-python-client: list, create and exec.

Usage: smoke.py GENERATED_DIR BASE_URL API_KEY MODULE_ID
(run by tests/api/openapi.rs; MODULE_ID is a running module whose driver
has `echo(x)`).
"""

import importlib
import json
import pkgutil
import sys


def main() -> None:
    generated, base_url, key, module_id = sys.argv[1:5]
    sys.path.insert(0, generated)
    package = next(m.name for m in pkgutil.iter_modules([generated]) if m.ispkg)

    def load(name: str):
        return importlib.import_module(f"{package}.{name}")

    client = load("client").AuthenticatedClient(
        base_url=base_url, token=key, raise_on_unexpected_status=True
    )
    models = load("models")

    # list: a page of modules, with the one the test started.
    r = load("api.modules.list_modules").sync_detailed(client=client, limit=50)
    assert r.status_code == 200, (r.status_code, r.content)
    items = json.loads(r.content)["items"]
    assert any(m["id"] == module_id for m in items), items

    # create: an edge location, answered with its secret once.
    edge = models.EdgeLocation.from_dict(
        {"id": "0191e9a0-0000-7000-8000-00000000c11e", "name": "Generated client"}
    )
    r = load("api.edges.create_edge").sync_detailed(client=client, body=edge)
    assert r.status_code == 201, (r.status_code, r.content)
    created = json.loads(r.content)
    assert created["name"] == "Generated client" and created["secret"], created

    # exec: a driver function on the running module.
    exec_module = next(
        load(f"api.modules.{m.name}")
        for m in pkgutil.iter_modules(load("api.modules").__path__)
        if m.name.startswith("exec")
    )
    call = models.ExecBody.from_dict({"method": "echo", "args": ["hello"]})
    r = exec_module.sync_detailed(module_id, client=client, body=call, timeout_ms=5000)
    assert r.status_code == 200, (r.status_code, r.content)
    assert json.loads(r.content)["result"] == "hello", r.content
    print("generated client: list, create and exec answered as expected")


if __name__ == "__main__":
    main()
