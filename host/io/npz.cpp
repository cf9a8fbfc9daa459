// NPZ writer: a zip archive (PKWARE APPNOTE, "stored" entries, no compression) holding one .npy
// per array, which numpy.load reads as a dict of arrays.
#include <zlib.h>  // crc32

#include <cstdint>
#include <string>

#include "file.h"  // write_atomically
#include "hetdro/check.h"
#include "hetdro/io.h"

namespace hetdro {
namespace {

void put16(std::string& s, uint32_t v) {
  s += char(v & 0xff);
  s += char((v >> 8) & 0xff);
}
void put32(std::string& s, uint32_t v) {
  put16(s, v & 0xffff);
  put16(s, v >> 16);
}

// The fields a local header and a central-directory entry share, from "version needed" on.
std::string common_fields(uint32_t crc, uint32_t size, const std::string& name) {
  std::string s;
  put16(s, 20);      // version needed to extract: 2.0
  put16(s, 0x0800);  // flags: bit 11, the names are UTF-8 (group names may hold any letters)
  put16(s, 0);       // compression: stored
  put16(s, 0);       // modification time
  put16(s, 0x21);    // modification date: 1980-01-01
  put32(s, crc);
  put32(s, size);  // compressed size
  put32(s, size);  // uncompressed size
  put16(s, uint32_t(name.size()));
  put16(s, 0);  // extra field length
  return s;
}

}  // namespace

void write_npz(const std::string& path, const std::vector<NpzArray>& arrays) {
  std::vector<std::string> headers;  // per array: its local header, name and npy header
  std::string central;
  uint32_t offset = 0;
  std::vector<io::Bytes> pieces;
  headers.reserve(arrays.size());
  for (const NpzArray& a : arrays) {
    const bool f32 = !a.f32.empty() || a.i32.empty();
    const void* data = f32 ? static_cast<const void*>(a.f32.data()) : a.i32.data();
    const size_t bytes = f32 ? a.f32.size() * sizeof(float) : a.i32.size() * sizeof(int32_t);
    const std::string npy = npy_header(f32 ? "<f4" : "<i4", a.shape);
    const std::string name = a.name + ".npy";
    const uint64_t size = npy.size() + bytes;
    if (size > 0xffffffffull || offset + size + 64 > 0xffffffffull)
      throw std::runtime_error(path + ": an NPZ above 4 GiB would need zip64");
    uint32_t crc = crc32(0L, reinterpret_cast<const Bytef*>(npy.data()), uInt(npy.size()));
    // crc32(crc, NULL, 0) would return a fresh initial value, not crc: skip empty payloads.
    if (bytes > 0) crc = crc32(crc, static_cast<const Bytef*>(data), uInt(bytes));
    std::string local;
    put32(local, 0x04034b50);
    local += common_fields(crc, uint32_t(size), name) + name + npy;
    put32(central, 0x02014b50);
    put16(central, 20);  // version made by
    central += common_fields(crc, uint32_t(size), name);
    put16(central, 0);  // comment length
    put16(central, 0);  // disk number
    put16(central, 0);  // internal attributes
    put32(central, 0);  // external attributes
    put32(central, offset);
    central += name;
    offset += uint32_t(local.size() + bytes);
    headers.push_back(std::move(local));
    pieces.push_back({headers.back().data(), headers.back().size()});
    pieces.push_back({data, bytes});
  }
  std::string end;
  put32(end, 0x06054b50);
  put16(end, 0);  // this disk
  put16(end, 0);  // the disk with the central directory
  put16(end, uint32_t(arrays.size()));
  put16(end, uint32_t(arrays.size()));
  put32(end, uint32_t(central.size()));
  put32(end, offset);
  put16(end, 0);  // comment length
  pieces.push_back({central.data(), central.size()});
  pieces.push_back({end.data(), end.size()});
  io::write_atomically(path, pieces);
}

}  // namespace hetdro
