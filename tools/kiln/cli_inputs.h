#pragma once
// Where the inputs of a run come from: shapes chosen for dynamic inputs nobody gave a shape,
// .npy files, and seeded random data, with a record of what was random so that a failing step
// can say the data was made up.
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/rvalue.h"
#include "lower/builder.h"
#include "plan/plan.h"
#include "runtime/open_plan.h"

namespace kiln::cli {

// Closed range of random integer inputs. The default 0..1 is a valid index into any non-empty
// table and a valid mask or segment id, so BERT-style models run on random data.
struct IntRange {
  int64_t lo = 0, hi = 1;
};
// "LO,HI" with LO <= HI; anything else is a usage error naming --int-range.
Result<IntRange> parse_int_range(const std::string& s);

// Which flags choose an input's shape: the build flags, or `kiln run`'s --shape / --input.
enum class ShapeFlags { kBuild, kRun };

// Fills `o` for every tensor input of `g` that has dynamic dims and no shapes in `o`: a dynamic
// dim whose symbol a given shape binds takes that size, every other is 1 (as trtexec does), and a
// notice on stderr names the input and the shape chosen. An input of unknown rank is a usage
// error: no shape can be guessed for it.
Status default_dynamic_shapes(const Graph& g, BuildOptions& o, ShapeFlags flags);

// The tensors given as --input NAME=FILE.npy; errors name the input and the file.
Result<std::map<std::string, Tensor>> read_input_files(const std::vector<std::string>& assignments);

// open_plan for the verbs. An ONNX model is built with the dims of `given` (inputs given as data
// or by --shape) for inputs no build option shapes, and defaults for the remaining dynamic ones.
Result<OpenedPlan> open_plan_with_defaults(const std::string& path, BuildOptions options,
                                           const std::map<std::string, Dims>& given, ShapeFlags flags);

// The inputs that got random data, so that a failure can say so.
class RandomInputs {
 public:
  void add(const std::string& name, DataType dt);
  bool empty() const { return ints_.empty() && floats_.empty() && bools_.empty(); }
  // `s` with a note naming the random inputs and how to give real data; `s` itself when none
  // was random or `s` is ok. The code is kept.
  Status explain(const Status& s, const IntRange& range) const;

 private:
  std::vector<std::string> ints_, floats_, bools_;
};

// Seeded random data: integers uniform in `range` (a usage error when the range does not fit
// `dt`, naming `name`), floats uniform in [-1, 1), bools fair.
Result<Tensor> random_tensor(const std::string& name, DataType dt, const Dims& dims, const IntRange& range,
                             std::mt19937_64& rng);

struct InputDecl {
  std::string name;
  TypeInfo type;
};
// Inputs in `decls` order: the tensor of `files` where given, else random data of the dims in
// `dims`, else of the declared static shape. Names in `files` or `dims` that are no input, and
// inputs random data cannot stand for (strings, sequences), are usage errors.
Result<std::vector<RValue>> make_inputs(const std::vector<InputDecl>& decls, std::map<std::string, Tensor> files,
                                        const std::map<std::string, Dims>& dims, uint64_t seed, const IntRange& range,
                                        ShapeFlags flags, RandomInputs* random);

// make_inputs for a plan, with the profile's opt shape for random inputs `shapes` does not name.
Result<std::vector<RValue>> plan_inputs(const Plan& plan, std::map<std::string, Tensor> files,
                                        std::map<std::string, Dims> shapes, uint64_t seed, const IntRange& range,
                                        RandomInputs* random);

}  // namespace kiln::cli
