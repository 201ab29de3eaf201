"""The tag that marks a bucket as holding PII.

tag_pii_bucket writes it when Macie finds sensitive data; block_public_s3 raises a public bucket carrying it
to CRITICAL; check_sagemaker_encryption rates a job that reads from such a bucket higher. A module of its own
so that reading the key does not import a whole check (and its cold-start cost) with it.
"""

PII_TAG = "mlwarden:pii"
