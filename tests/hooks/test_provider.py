"""Our connection types reach Airflow's providers manager, which fills the UI's connection form."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json
from airflow.providers_manager import ProvidersManager
pm = ProvidersManager()
print(json.dumps({
    "hooks": {t: pm.hooks[t].hook_class_name for t in ("qbo", "trustfile", "servicetrade", "itsperfect", "trackvia")
              if pm.hooks.get(t)},
    "qbo_labels": pm.field_behaviours.get("qbo", {}).get("relabeling"),
    "widgets": sorted(k for k in pm.connection_form_widgets
                      if k.startswith(("extra__qbo__", "extra__trustfile__", "extra__itsperfect__",
                                       "extra__trackvia__"))),
}))
"""


def test_connection_types_are_registered_with_labels_and_extra_fields(tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["hooks"] == {"qbo": "hooks.qbo.QboHook", "trustfile": "hooks.trustfile.TrustFileHook",
                              "servicetrade": "hooks.servicetrade.ServiceTradeHook",
                              "itsperfect": "hooks.itsperfect.ItsPerfectHook",
                              "trackvia": "hooks.trackvia.TrackViaHook"}
    assert found["qbo_labels"]["password"] == "OAuth client secret"
    assert found["widgets"] == ["extra__itsperfect__active", "extra__itsperfect__api_token",
                                "extra__itsperfect__budget_headroom", "extra__itsperfect__create_orders",
                                "extra__itsperfect__get_stock", "extra__itsperfect__hourly_limit",
                                "extra__itsperfect__username",
                                "extra__qbo__authorize_url",
                                "extra__qbo__minorversion", "extra__qbo__oauth_endpoint_url", "extra__qbo__realm_id",
                                "extra__qbo__refresh_token",
                                "extra__trackvia__api_key", "extra__trackvia__budget_headroom",
                                "extra__trackvia__hourly_limit",
                                "extra__trustfile__provisioning_url"]


def test_only_the_secret_extras_are_named_so_that_airflow_masks_them():
    """Airflow shows an extra as *** when its name looks secret ("token", "password"...): the token
    endpoint's URL must stay readable, the initial refresh token must not."""
    from airflow.sdk._shared.secrets_masker.secrets_masker import DEFAULT_SENSITIVE_FIELDS
    from integrations_provider import CONNECTION_TYPES

    def masked(name: str) -> bool:
        return any(word in name.lower() for word in DEFAULT_SENSITIVE_FIELDS)

    for connection_type in CONNECTION_TYPES:
        for name, field in connection_type.get("conn-fields", {}).items():
            secret = masked(name)
            assert secret == (field["schema"].get("format") == "password"), (connection_type["hook-name"], name)
