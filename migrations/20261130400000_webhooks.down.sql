DROP TABLE IF EXISTS webhook_attempt;
DROP TABLE IF EXISTS webhook_delivery;
DROP TABLE IF EXISTS webhook_event;
DROP TABLE IF EXISTS webhook_endpoint;
