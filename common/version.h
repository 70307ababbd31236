/* Version numbers shared by both binaries and checked against the database. */
#ifndef EZ_VERSION_H
#define EZ_VERSION_H

#define EZ_VERSION "0.1.0"
/* Highest migration in sql/main that this build needs (workers refuse older schemas). */
#define EZ_SCHEMA_VERSION 2
/* Highest migration in sql/log that this build needs. */
#define EZ_LOG_SCHEMA_VERSION 2

#endif
