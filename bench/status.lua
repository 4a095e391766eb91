-- wrk script for bench/scale.sh: GET the status route as a random user of a token file.
-- wrk -s bench/status.lua URL -- TOKEN_FILE
local tokens = {}

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      tokens[#tokens + 1] = line
    end
  end
  if #tokens == 0 then
    error("no token in " .. args[1])
  end
  math.randomseed(os.time() + #tokens)
end

function request()
  local token = tokens[math.random(#tokens)]
  return wrk.format("GET", nil, { Authorization = "Bearer " .. token })
end
