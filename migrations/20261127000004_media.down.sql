DROP TABLE media_object;
