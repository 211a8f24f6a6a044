DROP TABLE IF EXISTS stripe_event;
DROP TABLE IF EXISTS payment;
DROP FUNCTION IF EXISTS payment_paid_is_final();
