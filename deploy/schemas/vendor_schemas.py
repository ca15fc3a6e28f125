"""Refresh the JSON schemas vendored in ``deploy/schemas/`` (run by hand, not in CI).

The deployment tests validate ``docker-compose.yml`` and ``deploy/k8s/*.yaml``
offline, against schemas shipped here, taken from two PyPI packages:

* ``check-jsonschema`` vendors the Compose Specification schema
  (``check_jsonschema/builtin_schemas/vendor/compose-spec.json``, Apache-2.0);
* ``kubernetes-validate`` ships the Kubernetes OpenAPI schemas converted to JSON
  Schema (``kubernetes_validate/kubernetes-json-schema/vX.Y.Z-local-strict/``,
  Apache-2.0). Only the kinds the manifests use are copied, with the part of
  ``_definitions.json`` they reach (the whole file is 1.4 MB).

Usage::

    pip download --no-deps -d /tmp/wheels check-jsonschema kubernetes-validate
    python deploy/schemas/vendor_schemas.py --wheels /tmp/wheels --k8s-version 1.33.0
"""

from __future__ import annotations

import argparse
import json
import re
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
KINDS = (
    "configmap-v1",
    "deployment-apps-v1",
    "service-v1",
    "horizontalpodautoscaler-autoscaling-v2",
    "poddisruptionbudget-policy-v1",
    "cronjob-batch-v1",
    "job-batch-v1",
    "persistentvolumeclaim-v1",
    "namespace-v1",
)
# Kind files refer to "/api/_definitions.json#/$defs/X"; definitions to each other as "#/$defs/X".
_REF = re.compile(r'"\$ref":\s*"(?:/api/_definitions\.json)?#/\$defs/([^"]+)"')


def _wheel(wheels: Path, project: str) -> zipfile.ZipFile:
    found = sorted(wheels.glob(f"{project.replace('-', '_')}-*.whl"))
    if not found:
        raise SystemExit(f"no {project} wheel in {wheels}")
    return zipfile.ZipFile(found[-1])


def _reachable(definitions: dict, roots: list[str]) -> dict:
    """The ``$defs`` entries reachable from ``roots`` through ``$ref``."""
    keep: dict = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep[name] = definitions[name]
        todo.extend(_REF.findall(json.dumps(keep[name])))
    return dict(sorted(keep.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, required=True, help="folder with the two wheels")
    parser.add_argument("--k8s-version", default="1.33.0")
    args = parser.parse_args()

    with _wheel(args.wheels, "check-jsonschema") as wheel:
        compose = wheel.read("check_jsonschema/builtin_schemas/vendor/compose-spec.json")
        (HERE / "compose-spec.json").write_bytes(compose)
        license_text = wheel.read(
            "check_jsonschema/builtin_schemas/vendor/licenses/LICENSE.compose-spec"
        )
        (HERE / "LICENSE.compose-spec").write_bytes(license_text)

    prefix = f"kubernetes_validate/kubernetes-json-schema/v{args.k8s_version}-local-strict/"
    out = HERE / f"kubernetes-v{args.k8s_version}-strict"
    out.mkdir(exist_ok=True)
    with _wheel(args.wheels, "kubernetes-validate") as wheel:
        definitions = json.loads(wheel.read(prefix + "_definitions.json"))
        roots: list[str] = []
        for kind in KINDS:
            text = wheel.read(f"{prefix}{kind}.json").decode()
            (out / f"{kind}.json").write_text(text)
            roots.extend(_REF.findall(text))
        definitions["$defs"] = _reachable(definitions["$defs"], roots)
        (out / "_definitions.json").write_text(json.dumps(definitions, indent=1) + "\n")
        (HERE / "LICENSE.kubernetes-validate").write_bytes(
            next(wheel.read(n) for n in wheel.namelist() if n.endswith("licenses/LICENSE"))
        )
    print(f"wrote {HERE / 'compose-spec.json'} and {len(KINDS)} kinds into {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
