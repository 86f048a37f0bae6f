"""`python -m serve.build`: Ray's `serve build` config with the proxy on 127.0.0.1 (Ray writes 0.0.0.0),
keeping each deployment's own admission settings from its ServeArgs."""
from __future__ import annotations

import os
import stat

from actors.common.config import load_yaml
from serve.build import main
from serve.common import HEALTH_HEADROOM
from serve.te import TEServeArgs


def test_serve_build_binds_localhost_and_keeps_deployment_limits(tmp_path):
    out = tmp_path / "te.yaml"
    assert main(["serve.te:app", "-o", str(out)]) == 0
    config = load_yaml(out.read_text())
    assert config["http_options"]["host"] == "127.0.0.1"
    (deployment,) = config["applications"][0]["deployments"]
    args = TEServeArgs()
    assert deployment["max_ongoing_requests"] == args.max_concurrent + args.max_waiting + HEALTH_HEADROOM
    assert deployment["max_queued_requests"] == args.max_queued_requests
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644
    public = tmp_path / "public.yaml"
    assert main(["serve.te:app", "-o", str(public), "--host", "0.0.0.0"]) == 0
    assert load_yaml(public.read_text())["http_options"]["host"] == "0.0.0.0"
