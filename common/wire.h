/*
 * ZeroMQ wire format between workers (DEALER) and the background (ROUTER).
 * A message is: [type frame][payload frame]. Types below; payloads are JSON.
 */
#ifndef EZ_WIRE_H
#define EZ_WIRE_H

#define WIRE_NUDGE "nudge" /* worker -> bg: the outbox has new rows; no reply */
#define WIRE_PING "ping"   /* worker -> bg: liveness; bg replies WIRE_PONG */
#define WIRE_PONG "pong"
#define WIRE_LOGS "logs" /* worker -> bg: [seq][records JSON]; bg replies ack/nack */
#define WIRE_ACK "ack"
#define WIRE_NACK "nack"
/* worker -> bg: [kick][job name] makes that job due now (e.g. "model_registry"); no reply */
#define WIRE_KICK "kick"
/* Longest job name a kick may carry. */
#define WIRE_JOB_NAME_MAX 63

#endif
