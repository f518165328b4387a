-- A model call is recorded once per organization and request id, however often it is sent.
create unique index events_usage_request on events (
    json_extract(payload, '$.ModelCallRecorded.org'),
    json_extract(payload, '$.ModelCallRecorded.request_id')
) where aggregate_type = 'UsageLedger';
