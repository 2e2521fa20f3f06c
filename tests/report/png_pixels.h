// Test support: the pixels of a PNG (8-bit RGB or RGBA, not interlaced: what a headless browser's
// screenshot is), decoded with zlib alone.
#pragma once

#include <zlib.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace vmfest::testing {

struct PngPixels {
  std::uint32_t width = 0;
  std::uint32_t height = 0;
  std::vector<std::uint32_t> rgb;  // 0xRRGGBB, row by row (alpha dropped)
};

namespace png_detail {
inline std::uint32_t big_endian(const std::string& bytes, std::size_t at) {
  return (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[at])) << 24) |
         (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[at + 1])) << 16) |
         (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[at + 2])) << 8) |
         static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[at + 3]));
}

inline int paeth(int left, int up, int up_left) {
  const int guess = left + up - up_left;
  const int to_left = std::abs(guess - left);
  const int to_up = std::abs(guess - up);
  const int to_up_left = std::abs(guess - up_left);
  if (to_left <= to_up && to_left <= to_up_left) return left;
  return to_up <= to_up_left ? up : up_left;
}
}  // namespace png_detail

// std::runtime_error saying what is wrong with a file that is no such PNG.
inline PngPixels read_png(const std::filesystem::path& file) {
  using png_detail::big_endian;
  std::ifstream in(file, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < 8 || bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0) {
    throw std::runtime_error(file.string() + " is not a PNG");
  }
  PngPixels png;
  int channels = 0;
  std::string compressed;
  for (std::size_t at = 8; at + 12 <= bytes.size();) {
    const std::uint32_t length = big_endian(bytes, at);
    const std::string type = bytes.substr(at + 4, 4);
    if (at + 12 + length > bytes.size()) throw std::runtime_error(file.string() + " is cut short");
    if (type == "IHDR") {
      png.width = big_endian(bytes, at + 8);
      png.height = big_endian(bytes, at + 12);
      const int depth = bytes[at + 16];
      const int colour_type = bytes[at + 17];
      const int interlace = bytes[at + 20];
      if (depth != 8 || (colour_type != 2 && colour_type != 6) || interlace != 0) {
        throw std::runtime_error(file.string() + " is not an 8-bit RGB(A) PNG without interlace");
      }
      channels = colour_type == 2 ? 3 : 4;
    } else if (type == "IDAT") {
      compressed += bytes.substr(at + 8, length);
    }
    at += 12 + length;
  }
  if (channels == 0 || compressed.empty()) throw std::runtime_error(file.string() + ": no image");
  const std::size_t stride = static_cast<std::size_t>(png.width) * channels;
  std::vector<unsigned char> raw((stride + 1) * png.height);
  uLongf raw_size = static_cast<uLongf>(raw.size());
  if (::uncompress(raw.data(), &raw_size, reinterpret_cast<const Bytef*>(compressed.data()),
                   static_cast<uLong>(compressed.size())) != Z_OK ||
      raw_size != raw.size()) {
    throw std::runtime_error(file.string() + ": its image data does not inflate to its size");
  }
  // Undo each row's filter (PNG spec, section 9) in place.
  std::vector<unsigned char> previous(stride, 0);
  png.rgb.reserve(static_cast<std::size_t>(png.width) * png.height);
  for (std::uint32_t row = 0; row < png.height; ++row) {
    unsigned char* line = raw.data() + row * (stride + 1);
    const int filter = line[0];
    unsigned char* pixels = line + 1;
    for (std::size_t index = 0; index < stride; ++index) {
      const int left = index >= static_cast<std::size_t>(channels) ? pixels[index - channels] : 0;
      const int up = previous[index];
      const int up_left =
          index >= static_cast<std::size_t>(channels) ? previous[index - channels] : 0;
      int predicted = 0;
      switch (filter) {
        case 0:
          predicted = 0;
          break;
        case 1:
          predicted = left;
          break;
        case 2:
          predicted = up;
          break;
        case 3:
          predicted = (left + up) / 2;
          break;
        case 4:
          predicted = png_detail::paeth(left, up, up_left);
          break;
        default:
          throw std::runtime_error(file.string() + ": unknown row filter");
      }
      pixels[index] = static_cast<unsigned char>(pixels[index] + predicted);
    }
    for (std::uint32_t x = 0; x < png.width; ++x) {
      const unsigned char* pixel = pixels + static_cast<std::size_t>(x) * channels;
      png.rgb.push_back((static_cast<std::uint32_t>(pixel[0]) << 16) |
                        (static_cast<std::uint32_t>(pixel[1]) << 8) | pixel[2]);
    }
    previous.assign(pixels, pixels + stride);
  }
  return png;
}

}  // namespace vmfest::testing
