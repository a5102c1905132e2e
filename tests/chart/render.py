"""Render the chart with the real Helm engine and print it as one YAML stream (NOTES.txt
left out): `render.py NAMESPACE [VALUES_JSON]`. The e2e suite applies the output."""
import json
import os
import sys

import helm_python as helm

CHART = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "charts", "kube-standby")

if __name__ == "__main__":
    namespace = sys.argv[1]
    values = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    out = helm.Chart.load(CHART).render(values, name="kube-standby", namespace=namespace, is_install=True)
    for path, text in sorted(out.items()):
        if not path.endswith("NOTES.txt") and text.strip():
            print(f"---\n# Source: {path}\n{text.strip()}")
