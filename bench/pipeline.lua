-- 16 GETs sent back to back in one write; wrk counts each response.
init = function(args)
  local requests = {}
  for i = 1, 16 do
    requests[i] = wrk.format(nil, "/")
  end
  batch = table.concat(requests)
end

request = function()
  return batch
end
