def test_probe(handler, aws, cloudtrail_event):
    aws.bucket("probe-bucket", acl="public-read")
    r = handler(cloudtrail_event("PutBucketAcl", "probe-bucket"))
    print(r)
    print(aws.alerts()[0].body)
    print(aws.alerts()[0].subject, aws.alerts()[0].attributes)
    for ev in ([1], "x", None, 5, {"detail": "x"}):
        print(handler(ev))
