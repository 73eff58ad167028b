//! Implements the collective ring all-reduce algorithm on the global level

use core::ops::Range;
use std::{collections::HashMap, sync::Arc};

use crate::{
    NodeId,
    global::shared::GlobalCollectiveError,
    local::{get_ring_reduce_slice_ranges, get_slice_dim},
    node::sync::SyncService,
};
use burn_backend::{Backend, Slice, TensorMetadata};
use burn_communication::{Address, Protocol, data_service::TensorDataService};

// https://blog.dailydoseofds.com/p/all-reduce-and-ring-reduce-for-model

// Example: tensors=3, slices=3

// phase 1
// o->o  o
// o  o->o
//>o  o  o->

// o  1->o
//>o  o  1->
// 1->o  o

// o  1  2
// 2  o  1
// 1  2  o

// phase 2
//>o  1  2->
// 2->o  1
// 1  2->o

// 2->1  2
// 2  2->1
//>1  2  2->

// 2  2  2
// 2  2  2
// 2  2  2

/// Ring all-reduce algorithm with summation
///
/// * `node` - The id of the current node
/// * `nodes` - Map of all nodes in the operation
/// * `data_service` - The data service handles peer-to-peer tensor transfers
/// * `sync_service` - The sync service handles syncing with peers
/// * `tensor` - The tensor to reduce. At least one dimension size must be greater than the number
///   of nodes
pub(crate) async fn ring_all_reduce_sum<B, P>(
    node: NodeId,
    nodes: &HashMap<NodeId, Address>,
    data_service: Arc<TensorDataService<B, P>>,
    sync_service: Arc<SyncService<P>>,
    tensor: B::FloatTensorPrimitive,
) -> Result<B::FloatTensorPrimitive, GlobalCollectiveError>
where
    B: Backend,
    P: Protocol,
{
    let shape = tensor.shape();

    let device = &B::float_device(&tensor);
    // Slice tensors in N parts, N is node count
    let slice_dim = get_slice_dim(&shape);
    if shape[slice_dim] < nodes.len() {
        return Err(GlobalCollectiveError::RingReduceImpossible);
    }

    let ring = get_ring_topology(nodes.keys().cloned().collect::<Vec<_>>());
    let slice_ranges = get_ring_reduce_slice_ranges(shape[slice_dim], ring.len());
    let mut slices = slice_tensor::<B>(tensor, slice_dim, slice_ranges, device).await?;

    let mut send_slice_idx = ring
        .iter()
        .position(|id| *id == node)
        .expect("Node is in ring");
    let prev_node_idx = (send_slice_idx + ring.len() - 1) % ring.len(); // +ring.len for overflow
    let prev_node = nodes.get(&ring[prev_node_idx]).unwrap();
    let mut transfer_counter: u64 = 0;

    // Phase 1: add
    do_cycles::<B, P>(
        &mut slices,
        &mut transfer_counter,
        &mut send_slice_idx,
        true,
        prev_node.clone(),
        ring[prev_node_idx],
        &data_service,
        device,
    )
    .await?;

    // Phase 2: replace
    do_cycles::<B, P>(
        &mut slices,
        &mut transfer_counter,
        &mut send_slice_idx,
        false,
        prev_node.clone(),
        ring[prev_node_idx],
        &data_service,
        device,
    )
    .await?;

    // Wait for all nodes to finish
    sync_service.sync().await?;

    // merge slices
    Ok(B::float_cat(
        slices.into_iter().flatten().collect(),
        slice_dim,
    ))
}

/// Do N-1 cycles of ring-reduce
///
/// * `slices` - Slices of the original tensor, len equal to node count
/// * `transfer_counter` - counter for each step (one send one receive)
/// * `send_slice_idx` - counter for the index of each slice to send
/// * `is_phase_one` - In phase 1, the tensors are aggregated. Otherwise, they are overridden
/// * `data_service` - TensorDataService for peer-to-peer tensor transfers
/// * `device` - The device on which all local tensors are stored. Should match `slices`
#[allow(clippy::too_many_arguments)]
async fn do_cycles<B, P>(
    slices: &mut [Option<B::FloatTensorPrimitive>],
    transfer_counter: &mut u64,
    send_slice_idx: &mut usize,
    is_phase_one: bool,
    prev_node: Address,
    prev_node_id: NodeId,
    data_service: &Arc<TensorDataService<B, P>>,
    device: &B::Device,
) -> Result<(), GlobalCollectiveError>
where
    B: Backend,
    P: Protocol,
{
    let slice_count = slices.len();
    for _ in 0..(slice_count - 1) {
        let transfer_id = (*transfer_counter).into();
        // +slice_count to avoid overflow
        let recv_slice_idx = (*send_slice_idx + slice_count - 1) % slice_count;
        // The slice leaves as data without a copy (a tensor whose buffer is not shared; a
        // shared burn-ndarray buffer is copied element by element), is serialized from a
        // reference, and the same data becomes the slice again.
        let slice_send = slices[*send_slice_idx]
            .take()
            .expect("every slice is present");
        let slice_send = B::float_into_data(slice_send)
            .await
            .map_err(|e| GlobalCollectiveError::Server(format!("{e:?}")))?;
        data_service
            .expose_data_ref(&slice_send, 1, transfer_id)
            .await;
        slices[*send_slice_idx] = Some(B::float_from_data(slice_send, device));

        let download = {
            let data_client = data_service.clone();
            let next_node = prev_node.clone();
            tokio::spawn(async move { data_client.download_tensor(next_node, transfer_id).await })
        };

        let download = download
            .await
            .ok()
            .flatten()
            .ok_or(GlobalCollectiveError::PeerLost(prev_node_id))?;
        if is_phase_one {
            let tensor = B::float_from_data(download, device);
            let slice = slices[recv_slice_idx]
                .take()
                .expect("every slice is present");
            slices[recv_slice_idx] = Some(B::float_add(slice, tensor));
        } else {
            let tensor = B::float_from_data(download, device);
            let old_shape = slices[recv_slice_idx].as_ref().map(|t| t.shape());
            if old_shape != Some(tensor.shape()) {
                return Err(GlobalCollectiveError::PeerSentIncoherentTensor);
            }
            slices[recv_slice_idx] = Some(tensor);
        }

        // Move slice index
        *send_slice_idx = recv_slice_idx;
        *transfer_counter += 1;
    }

    Ok(())
}

/// But a tensor into even slices across a dimension
///
/// * `tensor` - the tensor to slice
/// * `slice_dim` - the dimension to slice across
/// * `slice_ranges` - The ranges of indices on `slice_dim` to use when slicing the tensor
///
/// Across the first dimension, each slice is a copy of its bytes in a buffer of its own (a
/// view into a shared buffer is copied out element by element when it is sent).
async fn slice_tensor<B: Backend>(
    tensor: B::FloatTensorPrimitive,
    slice_dim: usize,
    slice_ranges: Vec<Range<usize>>,
    device: &B::Device,
) -> Result<Vec<Option<B::FloatTensorPrimitive>>, GlobalCollectiveError> {
    let shape = tensor.shape();
    if slice_dim == 0 {
        let data = B::float_into_data(tensor)
            .await
            .map_err(|e| GlobalCollectiveError::Server(format!("{e:?}")))?;
        let row_bytes = data.as_bytes().len() / shape[0].max(1);
        return Ok(slice_ranges
            .iter()
            .map(|range| {
                let bytes =
                    data.as_bytes()[range.start * row_bytes..range.end * row_bytes].to_vec();
                let mut dims = shape.clone();
                dims[0] = range.len();
                let slice = burn_backend::TensorData::from_bytes_vec(bytes, dims, data.dtype);
                Some(B::float_from_data(slice, device))
            })
            .collect());
    }
    // full range across all dims as Slice
    let full_range = shape
        .iter()
        .map(|dim| Slice::from(0..*dim))
        .collect::<Vec<Slice>>();

    // Slice tensors
    let mut slices = vec![];
    for range in &slice_ranges {
        let mut all_ranges = full_range.clone();
        all_ranges[slice_dim] = Slice::from(range.clone());
        let slice = B::float_slice(tensor.clone(), &all_ranges);
        slices.push(Some(slice));
    }

    Ok(slices)
}

/// Get the ring topology
fn get_ring_topology(mut nodes: Vec<NodeId>) -> Vec<NodeId> {
    // This ordering could be more sophisticated, using node proximities etc
    nodes.sort();

    nodes
}
