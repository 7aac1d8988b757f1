"""Parses Prometheus text from stdin with the reference parser
(prometheus_client) and prints one line per sample: name{labels} value.
Exits non-zero when the text does not parse."""

import sys

from prometheus_client.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
        print(f"{sample.name}{{{labels}}} {sample.value}")
