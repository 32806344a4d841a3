// Joins several shards' COPY ... TO STDOUT streams into the one stream one PostgreSQL would
// send. Pure: no sockets.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace pgshard::executor {

// Each shard's stream is a complete COPY file of its rows. Concatenated they would repeat
// what belongs to the file, not to rows (COPY docs, "File Formats"):
//  - text/CSV with HEADER: the header line, the first CopyData of every shard (copyto.c
//    sends it as a message of its own) — the first shard's is kept, the others dropped;
//  - binary: the file header (11-byte signature, int32 flags, int32 extension length and the
//    extension) leads every shard's stream and the trailer (int16 -1) ends it — the first
//    header is kept, every trailer dropped and one sent before CopyDone.
// Fed one shard's CopyData after the other (the combiner passes each shard's rows in turn).
class CopyOutJoin {
 public:
  // `copy_out_response`: a shard's CopyOutResponse body (its first byte: 1 for binary).
  CopyOutJoin(int legs, std::string_view copy_out_response, bool header);

  // One CopyData payload of `leg`; appends the CopyData messages the client gets to `out`.
  void data(int leg, std::string_view payload, std::string& out);
  // `leg` has sent all its CopyData.
  void end(int leg);
  // Before the client's CopyDone: the binary trailer.
  void finish(std::string& out);
  // A shard's binary stream that was not a COPY file ("" when all were).
  const std::string& error() const { return error_; }
  bool binary() const { return binary_; }

 private:
  struct Leg {
    bool header_done = false;
    int messages = 0;
    std::string head;  // binary: the file header, until complete
    std::string tail;  // binary: the last bytes seen (the trailer, once the leg ends)
    bool ended = false;
  };
  void emit(std::string_view a, std::string_view b, std::string& out);

  std::vector<Leg> legs_;
  bool binary_ = false;
  bool header_ = false;
  bool header_sent_ = false;
  std::string error_;
};

}  // namespace pgshard::executor
