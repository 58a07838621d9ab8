"""The semiannual review: control reviews, and the report to the Information
Protection Committee built from the findings in Elasticsearch."""
