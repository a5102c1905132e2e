"""Chart tests with the real Helm engine (helm-python-sdk): lint, render both TLS modes,
and check the rendered webhook registration against the binary's own `webhook-config`."""
import json
import os
import subprocess
import sys

import yaml
import helm_python as helm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "charts", "kube-standby")
BIN = os.environ.get("KUBE_STANDBY_BIN", os.path.join(ROOT, "target", "debug", "kube-standby"))


def render(values=None):
    chart = helm.Chart.load(CHART)
    out = chart.render(values or {}, name="kube-standby", namespace="kube-standby", is_install=True)
    docs = []
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def test_lint_strict():
    report = helm.lint(CHART, strict=True)
    errors = [m for m in report["messages"] if m["severity"] >= 2]
    assert not errors and not report.get("errors"), report


def test_crds_are_the_generated_ones():
    chart = helm.Chart.load(CHART)
    names = [c["name"] for c in chart.crds]
    assert any(n.endswith("crds.yaml") for n in names), names


def test_self_signed_mode():
    docs = render()
    dep = by_kind(docs, "Deployment")[0]
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "run"
    assert "--tls-self-signed" in args
    assert "--webhook-config-name=kube-standby" in args
    assert "--tls-san=kube-standby.kube-standby.svc" in args
    assert not dep["spec"]["template"]["spec"].get("volumes")


def test_secret_mode_mounts_the_secret():
    docs = render({"tls": {"mode": "secret", "secretName": "my-tls", "caBundle": "Q0E="}})
    spec = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    args = spec["containers"][0]["args"]
    assert "--tls-cert-file=/etc/kube-standby/tls/tls.crt" in args
    assert "--tls-self-signed" not in args
    assert spec["volumes"][0]["secret"]["secretName"] == "my-tls"
    mwc = by_kind(docs, "MutatingWebhookConfiguration")[0]
    assert mwc["webhooks"][0]["clientConfig"]["caBundle"] == "Q0E="


def test_bad_tls_mode_fails_rendering():
    try:
        render({"tls": {"mode": "bogus"}})
    except helm.HelmError as e:
        assert "tls.mode" in str(e)
    else:
        raise AssertionError("rendering should fail")


def test_rbac_never_grants_exec():
    role = by_kind(render(), "ClusterRole")[0]
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert "pods/exec" not in resources
    assert "tokenreviews" in resources


def test_webhook_matches_the_binary():
    ca = os.path.join(ROOT, "tests", "data", "test-ca.crt")
    out = subprocess.run([BIN, "webhook-config", "--service", "kube-standby/kube-standby", "--ca-file", ca],
                         check=True, capture_output=True, text=True).stdout
    want = yaml.safe_load(out)["webhooks"][0]
    got = by_kind(render(), "MutatingWebhookConfiguration")[0]["webhooks"][0]
    want["clientConfig"].pop("caBundle", None)
    got["clientConfig"].pop("caBundle", None)
    assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True), (got, want)


if __name__ == "__main__":
    failed = 0
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_")]
    for t in tests:
        try:
            t()
            print(f"test {t.__name__} ... ok")
        except Exception as e:  # noqa: BLE001
            failed += 1
            print(f"test {t.__name__} ... FAILED: {e!r}")
    print(f"chart: {len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
