/* Streams one query's rows with libpq's single-row mode and prints rows, seconds, rows/s.
   The client keeps no rows, so what is measured is the server side (or the proxy). */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: stream_rows CONNINFO SQL\n");
    return 2;
  }
  PGconn* c = PQconnectdb(argv[1]);
  if (PQstatus(c) != CONNECTION_OK) {
    fprintf(stderr, "%s", PQerrorMessage(c));
    return 1;
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  if (!PQsendQuery(c, argv[2]) || !PQsetSingleRowMode(c)) {
    fprintf(stderr, "%s", PQerrorMessage(c));
    return 1;
  }
  long long rows = 0;
  int failed = 0;
  for (PGresult* r; (r = PQgetResult(c));) {
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_SINGLE_TUPLE) ++rows;
    else if (st != PGRES_TUPLES_OK) {
      fprintf(stderr, "%s", PQresultErrorMessage(r));
      failed = 1;
    }
    PQclear(r);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("%lld %.2f %.0f\n", rows, s, rows / s);
  PQfinish(c);
  return failed;
}
