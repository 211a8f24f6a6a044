DROP TABLE session;
DROP TABLE app_user;
