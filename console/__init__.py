"""The SOC console (`sepwatch console`): findings, a finding, the overview per
entity, the policy and the semiannual reports, over the same Elasticsearch."""
