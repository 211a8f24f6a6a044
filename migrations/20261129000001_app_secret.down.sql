DROP TABLE app_secret;
