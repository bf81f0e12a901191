//===- Images.cpp - folders of PNG and JPEG images -------------------------===//
//
// Decoding is libpng's and libjpeg's; nnc only converts the channels,
// resizes (bilinear with half-pixel centres, torchvision's Resize on tensors
// without antialiasing) and lays the pixels out as [C, H, W].
//
//===----------------------------------------------------------------------===//

#include "runtime/Sources.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <sys/stat.h>

#include <jpeglib.h>
#include <png.h>

using namespace nnc::rt;

namespace {

/// The most pixels an image may have (a 16384 x 16384 image): decoding
/// allocates them, and a header may claim anything.
constexpr uint64_t kMaxPixels = uint64_t(1) << 28;

std::string tooLarge(uint64_t w, uint64_t h) {
  return "an image of " + std::to_string(w) + "x" + std::to_string(h) + " pixels, more than nnc decodes (" +
         std::to_string(kMaxPixels) + ")";
}


/// A decoded image: `channels` interleaved bytes per pixel.
struct Image {
  int64_t width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
};

Status decodePng(const std::vector<uint8_t> &bytes, int64_t channels, const std::string &where, Image &out) {
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&img, bytes.data(), bytes.size()))
    return Status::error(where + ": a corrupt PNG image (" + img.message + ")");
  img.format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  if (uint64_t(img.width) * img.height > kMaxPixels) {
    png_image_free(&img);
    return Status::error(where + ": " + tooLarge(img.width, img.height));
  }
  out.width = img.width;
  out.height = img.height;
  out.channels = channels;
  out.pixels.resize(PNG_IMAGE_SIZE(img));
  if (!png_image_finish_read(&img, nullptr, out.pixels.data(), 0, nullptr)) {
    std::string why = img.message;
    png_image_free(&img);
    return Status::error(where + ": a corrupt PNG image (" + why + ")");
  }
  return Status::ok();
}

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpegFail(j_common_ptr c) {
  auto *e = reinterpret_cast<JpegError *>(c->err);
  (*c->err->format_message)(c, e->message);
  std::longjmp(e->jump, 1);
}

Status decodeJpeg(const std::vector<uint8_t> &bytes, int64_t channels, const std::string &where, Image &out) {
  jpeg_decompress_struct c;
  JpegError err;
  c.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpegFail;
  err.mgr.output_message = [](j_common_ptr) {}; // warnings stay quiet
  out.pixels.clear();
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&c);
    return Status::error(where + ": a corrupt JPEG image (" + err.message + ")");
  }
  jpeg_create_decompress(&c);
  jpeg_mem_src(&c, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&c, TRUE);
  if (uint64_t(c.image_width) * c.image_height > kMaxPixels) {
    std::string why = tooLarge(c.image_width, c.image_height);
    jpeg_destroy_decompress(&c);
    return Status::error(where + ": " + why);
  }
  c.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&c);
  out.width = c.output_width;
  out.height = c.output_height;
  out.channels = c.output_components;
  out.pixels.resize(static_cast<size_t>(out.width * out.height * out.channels));
  while (c.output_scanline < c.output_height) {
    JSAMPROW row = out.pixels.data() + static_cast<size_t>(c.output_scanline) * out.width * out.channels;
    jpeg_read_scanlines(&c, &row, 1);
  }
  jpeg_finish_decompress(&c);
  jpeg_destroy_decompress(&c);
  return Status::ok();
}

/// `img` as [channels, height, width] bytes, resized bilinearly (half-pixel
/// centres) when its size differs.
void toPlanar(const Image &img, int64_t height, int64_t width, uint8_t *out) {
  int64_t c = img.channels;
  auto at = [&](int64_t y, int64_t x, int64_t ch) {
    return static_cast<float>(img.pixels[static_cast<size_t>((y * img.width + x) * c + ch)]);
  };
  bool same = img.height == height && img.width == width;
  float sy = static_cast<float>(img.height) / static_cast<float>(height);
  float sx = static_cast<float>(img.width) / static_cast<float>(width);
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t y = 0; y < height; ++y)
      for (int64_t x = 0; x < width; ++x) {
        uint8_t &dst = out[(ch * height + y) * width + x];
        if (same) {
          dst = img.pixels[static_cast<size_t>((y * img.width + x) * c + ch)];
          continue;
        }
        float fy = std::max(0.0f, (static_cast<float>(y) + 0.5f) * sy - 0.5f);
        float fx = std::max(0.0f, (static_cast<float>(x) + 0.5f) * sx - 0.5f);
        int64_t y0 = std::min<int64_t>(static_cast<int64_t>(fy), img.height - 1);
        int64_t x0 = std::min<int64_t>(static_cast<int64_t>(fx), img.width - 1);
        int64_t y1 = std::min<int64_t>(y0 + 1, img.height - 1), x1 = std::min<int64_t>(x0 + 1, img.width - 1);
        float wy = fy - static_cast<float>(y0), wx = fx - static_cast<float>(x0);
        float v = (1 - wy) * ((1 - wx) * at(y0, x0, ch) + wx * at(y0, x1, ch)) +
                  wy * ((1 - wx) * at(y1, x0, ch) + wx * at(y1, x1, ch));
        dst = static_cast<uint8_t>(std::clamp(std::nearbyint(v), 0.0f, 255.0f));
      }
}

std::string lower(std::string s) {
  for (char &ch : s)
    ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

bool endsWith(const std::string &s, const char *tail) {
  size_t n = std::strlen(tail);
  return s.size() >= n && s.compare(s.size() - n, n, tail) == 0;
}

std::vector<std::string> entries(const std::string &dir, bool directories) {
  std::vector<std::string> names;
  if (DIR *d = opendir(dir.c_str())) {
    while (dirent *e = readdir(d)) {
      if (e->d_name[0] == '.')
        continue;
      struct stat st;
      if (stat((dir + "/" + e->d_name).c_str(), &st) == 0 && S_ISDIR(st.st_mode) == directories)
        names.push_back(e->d_name);
    }
    closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

/// Whether the header of an image file reads (its size known), without
/// decoding the pixels.
Status checkHeader(const std::string &path, bool png) {
  FILE *f = std::fopen(path.c_str(), "rb");
  if (!f)
    return Status::error(path + ": cannot open the file (" + std::strerror(errno) + ")");
  std::string why;
  if (png) {
    png_image img;
    std::memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_stdio(&img, f))
      why = std::string("a corrupt PNG image (") + img.message + ")";
    else if (img.width == 0 || img.height == 0)
      why = "an image without pixels";
    else if (uint64_t(img.width) * img.height > kMaxPixels)
      why = tooLarge(img.width, img.height);
    png_image_free(&img);
  } else {
    jpeg_decompress_struct c;
    JpegError err;
    c.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = jpegFail;
    err.mgr.output_message = [](j_common_ptr) {};
    if (setjmp(err.jump)) {
      why = std::string("a corrupt JPEG image (") + err.message + ")";
    } else {
      jpeg_create_decompress(&c);
      jpeg_stdio_src(&c, f);
      jpeg_read_header(&c, TRUE);
      if (uint64_t(c.image_width) * c.image_height > kMaxPixels)
        why = tooLarge(c.image_width, c.image_height);
    }
    jpeg_destroy_decompress(&c);
  }
  std::fclose(f);
  return why.empty() ? Status::ok() : Status::error(path + ": " + why);
}

/// Image files decoded when a batch needs them, so that a folder of any
/// size streams instead of being held decoded.
class ImageFiles : public RowSource {
public:
  ImageFiles(std::vector<std::string> paths, int64_t channels, int64_t height, int64_t width)
      : paths(std::move(paths)), channels(channels), height(height), width(width) {}
  Status copyRow(int64_t r, float *out) const override {
    const std::string &path = paths[static_cast<size_t>(r)];
    std::vector<uint8_t> bytes;
    if (Status s = readWholeFile(path, bytes); !s)
      return s;
    Image img;
    bool png = endsWith(lower(path), ".png");
    if (Status s = png ? decodePng(bytes, channels, path, img) : decodeJpeg(bytes, channels, path, img); !s)
      return s;
    if (img.width <= 0 || img.height <= 0 || img.channels != channels)
      return Status::error(path + ": an image without pixels");
    std::vector<uint8_t> planar(static_cast<size_t>(channels * height * width));
    toPlanar(img, height, width, planar.data());
    for (size_t i = 0; i < planar.size(); ++i)
      out[i] = pixelValue(planar[i]);
    return Status::ok();
  }

private:
  std::vector<std::string> paths;
  int64_t channels, height, width;
};

} // namespace

Status nnc::rt::loadImageFolder(const std::string &dir, int64_t channels, int64_t height, int64_t width, Table &out,
                                std::vector<std::string> *classNames) {
  out = Table();
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return Status::error(dir + ": not a directory (images(DIR) reads DIR/CLASS/*.png or *.jpg)");
  if (channels != 1 && channels != 3)
    return Status::error(dir + ": images feed an input of 1 (grey) or 3 (RGB) channels, not " +
                         std::to_string(channels));
  std::vector<std::string> classes = entries(dir, true);
  if (classes.empty())
    return Status::error(dir + ": no class subfolders (images(DIR) reads DIR/CLASS/*.png or *.jpg)");
  Field labels{"labels", 1, true, {}};
  labels.source = dir;
  std::vector<std::string> paths;
  // Every file's header is read now, so that a file that is no image fails
  // before training starts; the pixels are decoded batch by batch.
  for (size_t k = 0; k < classes.size(); ++k) {
    for (const std::string &file : entries(dir + "/" + classes[k], false)) {
      std::string ext = lower(file);
      bool png = endsWith(ext, ".png"), jpeg = endsWith(ext, ".jpg") || endsWith(ext, ".jpeg");
      if (!png && !jpeg)
        continue;
      std::string path = dir + "/" + classes[k] + "/" + file;
      if (Status s = checkHeader(path, png); !s)
        return s;
      paths.push_back(path);
      labels.values.push_back(static_cast<float>(k));
    }
  }
  out.count = static_cast<int64_t>(paths.size());
  if (out.count == 0)
    return Status::error(dir + ": no PNG or JPEG images in its class subfolders");
  Field images{"images", channels * height * width, false, {}};
  images.source = dir;
  images.from = std::make_shared<ImageFiles>(std::move(paths), channels, height, width);
  out.fields.push_back(std::move(images));
  out.fields.push_back(std::move(labels));
  if (classNames)
    *classNames = std::move(classes);
  return Status::ok();
}
