DROP TABLE stream_origin;
