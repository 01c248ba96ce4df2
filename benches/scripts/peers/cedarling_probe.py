"""Tries Cedarling (PyPI cedarling-python) on a peer-comparison workload.

    python cedarling_probe.py WORKLOAD_DIR STORE_DIR

Runs in the venv run.py makes. Cedarling is built around JWTs and a policy
store; without tokens its entry point is Cedarling.authorize_unsigned, which
takes the principal and the resource as EntityData (a type, an id and
attributes). This writes the workload's schema and policies, unchanged, as a
directory policy store with the bundle's entities as default entities, then
asks Cedarling every request. It prints one JSON object: either how many
decisions matched ours, or the exact error that stopped it. It does not time
anything: a peer is only timed once it decides exactly like ours.
"""

import json
import shutil
import sys
from importlib import metadata
from pathlib import Path


def write_store(workload: Path, store: Path) -> None:
    if store.exists():
        shutil.rmtree(store)
    (store / "policies").mkdir(parents=True)
    (store / "entities").mkdir()
    bundle = workload / "bundle"
    (store / "metadata.json").write_text(json.dumps({
        # 2.5.20 reads only spec version 1.
        "policy_store_spec_version": 1,
        "cedar_version": "4.4.0",
        "policy_store": {
            "id": "ced0ed9e0001",
            "name": "Saas",
            "description": "cedar-edge peer comparison workload",
            "version": "1.0.0",
        },
    }))
    shutil.copy(bundle / "saas.cedarschema", store / "schema.cedarschema")
    shutil.copy(bundle / "generated.cedar", store / "policies" / "generated.cedar")
    shutil.copy(bundle / "entities.json", store / "entities" / "entities.json")


def main() -> int:
    workload, store = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    report = {"engine": "cedarling", "version": metadata.version("cedarling-python")}
    try:
        from cedarling_python import BootstrapConfig, Cedarling, EntityData, RequestUnsigned
    except ImportError as err:
        report.update(status="not installed", reason=str(err))
        print(json.dumps(report))
        return 0
    write_store(workload, store)
    try:
        cedarling = Cedarling(BootstrapConfig({
            "CEDARLING_APPLICATION_NAME": "cedar-edge-peers",
            "CEDARLING_POLICY_STORE_LOCAL_FN": str(store),
            "CEDARLING_JWT_SIG_VALIDATION": "disabled",
            "CEDARLING_JWT_STATUS_VALIDATION": "disabled",
            "CEDARLING_LOG_TYPE": "off",
        }))
    except Exception as err:  # Cedarling raises plain ValueError here.
        report.update(status="store refused", reason=f"{type(err).__name__}: {err}")
        print(json.dumps(report))
        return 0

    entities = {
        (e["uid"]["type"], e["uid"]["id"]): e
        for e in json.loads((workload / "bundle" / "entities.json").read_text())
    }
    requests = json.loads((workload / "requests.json").read_text())["requests"]
    matched = 0
    for index, r in enumerate(requests):
        def data(uid: dict) -> "EntityData":
            entity = entities[(uid["type"], uid["id"])]
            return EntityData.from_dict({
                "cedar_entity_mapping": {"entity_type": uid["type"], "id": uid["id"]},
                **entity["attrs"],
            })
        try:
            answer = cedarling.authorize_unsigned(RequestUnsigned(
                action=f'{r["action"]["type"]}::"{r["action"]["id"]}"',
                resource=data(r["resource"]),
                context=r["context"],
                principal=data(r["principal"]),
            ))
        except Exception as err:  # authorize_errors.* and ValueError
            report.update(
                status="cannot decide these requests",
                reason=f"request {index}: {type(err).__name__}: {err}",
                decided=index,
            )
            print(json.dumps(report))
            return 0
        matched += answer.is_allowed() == (r["expected"] == "allow")
    report.update(status="decided", decided=len(requests), matched=matched)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
